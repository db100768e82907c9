"""The launch description shared by launch/reconstruct.launch.py and occnet_launch; the pip-route
launcher for real (start, SIGINT forwarding, exit)."""
import importlib.util
import signal
import subprocess
import time

import pytest
import yaml
from ros_helpers import REPO, VENV_BIN, node_env, random_domain_id, write_random_checkpoint

from occnet_ros.cli import launch as cli
from occnet_ros.ros.launch_spec import LaunchSpecError, NodeSpec, launch_nodes, normalize_namespace, parse_remap

LAUNCH_FILE = REPO / "launch" / "reconstruct.launch.py"


def test_default_launch_is_the_node_with_shipped_params():
    (spec,) = launch_nodes()
    assert (spec.package, spec.executable, spec.name, spec.namespace) == (
        "occnet_ros", "reconstruction_node", "reconstruction_node", "")
    assert spec.parameters == (str(REPO / "config" / "reconstruct.yaml"),)
    assert spec.remappings == ()
    assert spec.ros_args() == ["--ros-args", "-r", "__node:=reconstruction_node", "--params-file",
                               str(REPO / "config" / "reconstruct.yaml")]


def test_namespace_remaps_and_sim_camera():
    specs = launch_nodes("my.yaml", "robot1/", ["points:=/cam/depth/points", ("objects", "/perception/objects")],
                         use_sim_camera=True, sim_params_file="sim.yaml")
    node, sim = specs
    assert node.namespace == sim.namespace == "/robot1"
    # the camera's file also goes to the node, last: it tells the node the camera's up vector
    assert node.parameters == ("my.yaml", "sim.yaml") and sim.parameters == ("sim.yaml",)
    assert node.remappings == (("points", "/cam/depth/points"), ("objects", "/perception/objects"))
    # the camera's outputs follow the node's inputs; unmapped ones meet by their shared relative name
    assert (sim.executable, sim.name) == ("sim_camera", "sim_camera")
    assert sim.remappings == (("points", "/cam/depth/points"),)
    assert node.ros_args()[-4:] == ["-r", "points:=/cam/depth/points", "-r", "objects:=/perception/objects"]
    assert ["-r", "__ns:=/robot1"] == node.ros_args()[3:5]
    shipped = launch_nodes(use_sim_camera=True)
    assert shipped[1].parameters == (str(REPO / "config" / "sim_camera.yaml"),)
    assert shipped[0].parameters == (str(REPO / "config" / "reconstruct.yaml"),
                                     str(REPO / "config" / "sim_camera.yaml"))
    assert launch_nodes(use_sim_camera=False)[0].parameters == (str(REPO / "config" / "reconstruct.yaml"),)


@pytest.mark.parametrize("bad,words", [
    (dict(remaps=["points"]), "from:=to"),
    (dict(remaps=["pointz:=/x"]), "cannot remap 'pointz'"),
    (dict(remaps=["points:=/a", "points:=/b"]), "twice"),
    (dict(remaps=["points:=a b"]), "not a valid"),
    (dict(namespace="bad ns"), "invalid namespace"),
])
def test_bad_options_are_refused(bad, words):
    with pytest.raises(LaunchSpecError, match=words):
        launch_nodes(**bad)


def test_name_helpers():
    assert normalize_namespace("") == "" and normalize_namespace("/a/b/") == "/a/b"
    assert parse_remap(" points := /x/y ") == ("points", "/x/y")
    assert NodeSpec("p", "e", "n").ros_args() == ["--ros-args", "-r", "__node:=n"]


def test_cli_dry_run_and_errors(capsys, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters: {}\n")
    assert cli.main(["--dry-run", "--params-file", str(params), "--namespace", "ns", "--remap",
                     "points:=/cam/points"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(VENV_BIN / "reconstruction_node") + " --ros-args")
    assert f"--params-file {params}" in line and "points:=/cam/points" in line and "__ns:=/ns" in line
    assert cli.main(["--dry-run", "--remap", "nonsense"]) == 2
    assert "from:=to" in capsys.readouterr().err
    assert cli.main(["--dry-run", "--params-file", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_launch_file_compiles_and_uses_the_spec():
    source = LAUNCH_FILE.read_text()
    compile(source, str(LAUNCH_FILE), "exec")
    assert "launch_spec.launch_nodes(" in source and "def generate_launch_description" in source


def test_launch_file_loads_with_launch_ros():
    launch = pytest.importorskip("launch", reason="ROS 2 'launch' is not installed (pip route)")
    if not hasattr(launch, "LaunchDescription"):  # the repo's launch/ folder seen as a namespace package
        pytest.skip("ROS 2 'launch' is not installed ('import launch' found the repo's launch/ folder)")
    pytest.importorskip("launch_ros", reason="launch_ros is not installed")
    from launch.launch_context import LaunchContext

    mod_spec = importlib.util.spec_from_file_location("reconstruct_launch", LAUNCH_FILE)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    context = LaunchContext()
    for action in ld.entities:
        if type(action).__name__ == "DeclareLaunchArgument":
            action.visit(context)
    context.launch_configurations.update({"use_sim_camera": "true", "points": "/cam/points"})
    opaque = [a for a in ld.entities if type(a).__name__ == "OpaqueFunction"][0]
    nodes = opaque.execute(context)
    assert [n.node_executable for n in nodes] == ["reconstruction_node", "sim_camera"]


def test_launcher_runs_and_forwards_sigint(tmp_path):
    ckpt = write_random_checkpoint(tmp_path / "random_test_double.pt")
    cfg = yaml.safe_load((REPO / "config" / "reconstruct.yaml").read_text())
    p = cfg["/**"]["ros__parameters"]
    p["checkpoint"], p["reconstruction"]["device"] = str(ckpt), "cpu"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "launch.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(VENV_BIN / "occnet_launch"), "--params-file", str(params)], stdout=out,
                                stderr=subprocess.STDOUT, env=node_env(random_domain_id()))
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and "ready" not in log.read_text() and proc.poll() is None:
            time.sleep(0.2)
        assert "ready" in log.read_text(), log.read_text()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, log.read_text()
        assert time.monotonic() - t0 < 8
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "starting:" in text and "stopping on signal" in text
    # the node itself is gone too
    ps = subprocess.run(["pgrep", "-f", f"--params-file {params}"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""


def test_launcher_exits_when_its_node_fails(tmp_path):
    params = tmp_path / "bad.yaml"
    params.write_text("/**:\n  ros__parameters:\n    segmentation:\n      mode: magic\n")
    out = subprocess.run([str(VENV_BIN / "occnet_launch"), "--params-file", str(params)], capture_output=True,
                         text=True, timeout=60, env=node_env(random_domain_id()))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "segmentation.mode" in out.stderr and "reconstruction_node exited with code 2" in out.stdout


def test_rviz_config_shows_markers_cloud_and_tf():
    cfg = yaml.safe_load((REPO / "config" / "occnet.rviz").read_text())
    displays = {d["Class"]: d for d in cfg["Visualization Manager"]["Displays"]}
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "/markers"
    assert displays["rviz_default_plugins/PointCloud2"]["Topic"]["Value"] == "/points"
    assert displays["rviz_default_plugins/TF"]["Enabled"]
    from occnet_ros.ros.markers import NAMESPACE
    assert displays["rviz_default_plugins/MarkerArray"]["Namespaces"] == {NAMESPACE: True}


def test_launcher_children_get_the_shipped_dds_profile_unless_set():
    from occnet_ros.cli.launch import child_environment
    from occnet_ros.ros.launch_spec import fastdds_profile_file

    assert child_environment({"PATH": "/bin"})["FASTDDS_DEFAULT_PROFILES_FILE"] == str(fastdds_profile_file())
    assert child_environment({"FASTDDS_DEFAULT_PROFILES_FILE": "/a.xml"})["FASTDDS_DEFAULT_PROFILES_FILE"] == "/a.xml"
