"""Node parameters: one description per setting (the fields), the generated YAML, validation messages,
renamed names refused, declaration on a real rclpy node."""
import dataclasses

import pytest
import yaml
from ros_helpers import REPO, random_domain_id

from occnet_ros.config_io import describe, setting
from occnet_ros.perception.config import PerceptionConfig
from occnet_ros.reconstruction.config import ReconstructorConfig
from occnet_ros.ros.node_params import (PARAMETERS, RENAMED, NodeParams, ParamError, check_ranges, default_values,
                                        flatten, params_from_values, params_yaml)


def shipped_values():
    data = yaml.safe_load((REPO / "config" / "reconstruct.yaml").read_text())
    assert list(data) == ["/**"] and list(data["/**"]) == ["ros__parameters"]

    return flatten(data["/**"]["ros__parameters"])


def test_the_shipped_yaml_is_generated_from_the_one_description():
    assert (REPO / "config" / "reconstruct.yaml").read_text() == params_yaml(), \
        "regenerate: python -m occnet_ros.ros.node_params > config/reconstruct.yaml"
    text = params_yaml()
    for name, info in PARAMETERS.items():
        assert info.doc and info.doc.split()[0] in text, name  # every description is in the file


def test_every_parameter_is_described_once_and_in_the_yaml():
    names = set(default_values())
    assert names == set(PARAMETERS)
    values = shipped_values()
    assert set(values) == names
    assert values == default_values()  # the YAML holds the defaults
    assert params_from_values(values) == NodeParams()
    for name, info in PARAMETERS.items():
        assert info.default == default_values()[name], name
        if info.range is not None:
            assert info.range[0] <= info.default <= info.range[1], name


def test_the_node_embeds_the_reconstructor_config_with_its_defaults_and_descriptions():
    rec = describe(ReconstructorConfig)
    # one default per setting, except the precision: the node runs auto (bfloat16 where the CPU has it natively),
    # the library keeps the reference float32
    assert NodeParams().reconstruction == dataclasses.replace(ReconstructorConfig(), precision="auto")
    for name, info in rec.items():
        node = PARAMETERS[f"reconstruction.{name}"]
        assert node == (dataclasses.replace(info, default="auto") if name == "precision" else info)  # one description
    assert set(describe(PerceptionConfig)) < set(PARAMETERS)


def test_a_setting_without_description_is_refused():
    @dataclasses.dataclass
    class Bad:
        described: int = setting(1, doc="has one")
        bare: int = 2

    with pytest.raises(ValueError, match="'bare'.*no description"):
        describe(Bad)


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_renamed_parameters_are_refused_with_the_new_name(old):
    values = default_values()
    values[old] = default_values()[RENAMED[old]]
    with pytest.raises(ParamError, match=f"'{old}' is now '{RENAMED[old]}'"):
        params_from_values(values)
    assert RENAMED[old] in PARAMETERS


@pytest.mark.parametrize("name,value,words", [
    ("reconstruction.resolution0", 1, "'reconstruction.resolution0' = 1 is outside"),
    ("marker_alpha", 1.5, "'marker_alpha' = 1.5 is outside"),
    ("sync.tolerance", float("nan"), "'sync.tolerance'"),
    ("segmentation.mode", "magic", "parameter 'segmentation.mode': 'magic' is not one of"),
    ("reconstruction.device", "tpu", "parameter 'reconstruction': device must be auto, cpu, cuda or cuda:N"),
    ("reconstruction.upsampling_steps", 2.5, "parameter 'reconstruction.upsampling_steps': expected an integer"),
    ("filter.voxel_size", "big", "parameter 'filter.voxel_size': expected a number"),
    ("up", [0.0, 0.0], "up must be 3 finite numbers"),
    ("known_empty.n_sigma", -1.0, "'known_empty.n_sigma' = -1.0 is outside"),
    ("known_empty.edge_window_px", 4, "known_empty.edge_window_px must be a positive odd number"),
    ("known_empty.free_space", "yes", "parameter 'known_empty.free_space'"),
    ("segmentation.max_points", 10, "max_points 10 is below min_points"),
    ("filter.max_range", 0.05, "max_range 0.05 must exceed min_range"),
    ("world_frame", "/world", "world_frame must not start with '/'"),
    ("nonsense", 1, "unknown parameter 'nonsense'"),
    ("mesh.max_faces", 3, "max_faces must be 0 (off) or >= 4"),
    ("mesh.max_faces", -1, "'mesh.max_faces' = -1 is outside"),
    ("reconstruction.reuse_tolerance", 1.0, "'reconstruction.reuse_tolerance' = 1.0 is outside"),
    ("reconstruction.anchor.radius", -0.01, "'reconstruction.anchor.radius' = -0.01 is outside"),
    ("query_mode", "fast", "parameter 'query_mode': 'fast' is not one of"),
    ("query_mode", "grid", "set reconstruction.keep_grid to true"),
])
def test_bad_values_name_the_parameter(name, value, words):
    values = default_values()
    values[name] = value
    with pytest.raises(ParamError) as e:
        params_from_values(values)
    assert words in str(e.value)


def test_integers_accepted_for_floats_and_nested_types():
    values = default_values()
    values.update({"filter.voxel_size": 0, "up": [0, 0, 1], "segmentation.mode": "geometric"})
    p = params_from_values(values)
    assert p.filter.voxel_size == 0.0 and p.up == [0.0, 0.0, 1.0] and p.segmentation.mode == "geometric"
    assert flatten(p)["up"] == [0.0, 0.0, 1.0]
    check_ranges({"seed": 5})
    with pytest.raises(ParamError, match="seed"):
        check_ranges({"seed": -1})


def test_check_startup(tmp_path):
    from occnet_ros.ros.reconstruction_node import check_startup

    values = default_values()
    values["checkpoint"] = str(tmp_path / "missing.pt")
    with pytest.raises(ParamError, match="missing.pt"):
        check_startup(params_from_values(values))
    values["checkpoint"] = ""
    check_startup(params_from_values(values))  # the shipped default is looked up later, by the loader


@pytest.fixture
def ros_context():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    ctx = Context()
    rclpy.init(context=ctx, domain_id=random_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    yield ctx
    rclpy.shutdown(context=ctx)


def test_declare_on_a_real_node(ros_context):
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from occnet_ros.ros.node_params import declare_parameters

    node = Node("params_test", context=ros_context, parameter_overrides=[
        Parameter("segmentation.min_points", value=123), Parameter("up", value=[0.0, 0.0, 1.0]),
        Parameter("filter.voxel_size", value=0)])
    try:
        p = declare_parameters(node)
        assert p.segmentation.min_points == 123 and p.up == [0.0, 0.0, 1.0] and p.filter.voxel_size == 0.0
        desc = node.describe_parameter("reconstruction.resolution0")
        assert "MISE" in desc.description and desc.read_only
        assert (desc.integer_range[0].from_value, desc.integer_range[0].to_value) == (2, 512)
        assert desc.description == PARAMETERS["reconstruction.resolution0"].doc  # the one description
        fdesc = node.describe_parameter("marker_alpha")
        assert fdesc.floating_point_range[0].to_value == 1.0
    finally:
        node.destroy_node()


@pytest.mark.parametrize("override,words", [
    (("reconstruction.resolution0", 1), "reconstruction.resolution0"),
    (("mesh.resolution0", 16), "'mesh.resolution0' is now 'reconstruction.resolution0'"),
    (("device", "cpu"), "'device' is now 'reconstruction.device'"),
    (("segmentation.mode", "magic"), "segmentation.mode"),
    (("marker_alpha", 3.0), "marker_alpha"),
])
def test_declare_rejects_bad_overrides(ros_context, override, words):
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from occnet_ros.ros.node_params import declare_parameters

    node = Node("params_test_bad", context=ros_context, parameter_overrides=[Parameter(override[0], value=override[1])])
    try:
        with pytest.raises(ParamError, match=words):
            declare_parameters(node)
    finally:
        node.destroy_node()
