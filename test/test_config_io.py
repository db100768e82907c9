"""Typed YAML configuration: values parsed into dataclasses, unknown keys and wrong types rejected by name."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from occnet_ros.config_io import ConfigError, from_dict, load_config


@dataclass
class Inner:
    size: int = 3
    ratio: float = 0.5


@dataclass
class Outer:
    name: str = "x"
    mode: Literal["auto", "cpu", "cuda"] = "auto"
    inner: Inner = field(default_factory=Inner)
    levels: list[int] = field(default_factory=lambda: [1, 2])
    up: tuple[float, float, float] = (0.0, -1.0, 0.0)

    def validate(self):
        if self.inner.size <= 0:
            raise ValueError("inner.size must be positive")


def test_nested_values_and_int_to_float():
    cfg = from_dict(Outer, {"name": "a", "inner": {"ratio": 1}, "up": [0, 0, 1], "mode": "cpu"})
    assert cfg.name == "a" and cfg.mode == "cpu"
    assert cfg.inner == Inner(size=3, ratio=1.0) and isinstance(cfg.inner.ratio, float)
    assert cfg.up == (0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    "data,match",
    [
        ({"nmae": "a"}, r"unknown key\(s\) \['nmae'\]"),
        ({"inner": {"sise": 1}}, r"config.inner: unknown key"),
        ({"inner": {"size": "3"}}, r"config.inner.size: expected an integer"),
        ({"mode": "gpu"}, r"'gpu' is not one of"),
        ({"up": [0, 1]}, r"expected 3 items"),
        ({"levels": [1, True]}, r"levels\[1\]"),
        ({"inner": {"size": 0}}, r"inner.size must be positive"),
    ],
)
def test_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data)


def test_load_config_names_the_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: b\ninner:\n  size: 7\n")
    assert load_config(Outer, good).inner.size == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nbogus: 1\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_config(Outer, bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Outer, tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, broken)


def test_flatten_unflatten_round_trip():
    from occnet_ros.config_io import flatten, unflatten

    cfg = Outer(name="q", inner=Inner(size=5, ratio=0.25), up=(1.0, 0.0, 0.0))
    flat = flatten(cfg)
    assert flat["inner.size"] == 5 and flat["up"] == [1.0, 0.0, 0.0]
    assert from_dict(Outer, unflatten(flat)) == cfg


def test_flatten_nested_mapping_like_a_ros_parameter_file():
    from occnet_ros.config_io import flatten

    section = {"device": "cpu", "mesh": {"resolution0": 32, "levels": (1, 2)}, "up": [0, 0, 1]}
    assert flatten(section) == {"device": "cpu", "mesh.resolution0": 32, "mesh.levels": [1, 2], "up": [0, 0, 1]}


@dataclass
class _Inner:
    a: int = 1
    b: int = 2


@dataclass
class _Outer:
    plain: _Inner = field(default_factory=_Inner)
    tuned: _Inner = field(default_factory=lambda: _Inner(a=10, b=20))  # a group default unlike its class's


def test_a_group_given_in_part_keeps_its_field_defaults_not_its_class_defaults():
    cfg = from_dict(_Outer, {"plain": {"b": 5}, "tuned": {"b": 7}})
    assert cfg.plain == _Inner(a=1, b=5) and cfg.tuned == _Inner(a=10, b=7)
    assert from_dict(_Outer, {}).tuned == _Inner(10, 20)
    with pytest.raises(ConfigError, match="tuned"):
        from_dict(_Outer, {"tuned": {"c": 1}})
    # the node's groups: a parameter file that sets one key of a group keeps the node's defaults of the others
    from occnet_ros.perception.config import PerceptionConfig

    node = from_dict(PerceptionConfig, {"reconstruction": {"device": "cpu"}, "filter": {"outlier_neighbors": 8}})
    assert node.reconstruction.precision == PerceptionConfig().reconstruction.precision == "auto"
    assert (node.filter.min_range, node.filter.max_range) == (PerceptionConfig().filter.min_range,
                                                              PerceptionConfig().filter.max_range) == (0.1, 5.0)
