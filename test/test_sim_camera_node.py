"""The sim_camera node in a separate process: its messages parse back to the scene it rendered."""
from __future__ import annotations

import subprocess
import time

import numpy as np
import open3d as o3d
import pytest
import yaml

from ros_helpers import REPO, node_env, random_domain_id, start_program, stop_program, wait_until

rclpy = pytest.importorskip("rclpy")
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from occnet_ros.config_io import from_dict  # noqa: E402
from occnet_ros.ros.conversions import (  # noqa: E402
    camera_info_to_intrinsics, image_to_mask, image_to_rgb, pointcloud2_to_arrays, stamp_to_sec,
)
from occnet_ros.sim.ground_truth import read_ground_truth  # noqa: E402
from occnet_ros.sim.node_config import (  # noqa: E402
    PARAMETER_DESCRIPTIONS, SimCameraNodeConfig, describe, flatten, up_in_camera,
)

DOMAIN = random_domain_id()
W, H, FX = 160, 120, 150.0
TOPICS = {"points": PointCloud2, "image": Image, "mask": Image, "camera_info": CameraInfo}


@pytest.fixture(scope="module")
def ros_context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    node = rclpy.create_node("sim_camera_test_listener", context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def surface_distance(mesh, points: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def test_messages_parse_back_to_the_scene(ros_context, tmp_path):
    node, executor = ros_context
    received: dict[str, list] = {t: [] for t in TOPICS}
    subs = [node.create_subscription(cls, topic, lambda m, t=topic: received[t].append(m), 10)
            for topic, cls in TOPICS.items()]
    from geometry_msgs.msg import PoseStamped

    poses = []
    subs.append(node.create_subscription(PoseStamped, "camera_pose", poses.append, 10))
    gt_dir = tmp_path / "gt"
    proc = start_program("sim_camera", [
        "--params-file", str(REPO / "config" / "sim_camera.yaml"),
        "-p", "rate_hz:=4.0", "-p", f"camera.width:={W}", "-p", f"camera.height:={H}",
        "-p", f"camera.fx:={FX}", "-p", f"camera.fy:={FX}", "-p", f"ground_truth_dir:={gt_dir}",
        "-p", "scene.objects:=[mug, sphere, torus]"], DOMAIN, tmp_path / "sim_camera.log")
    try:
        def frames_with_poses() -> bool:  # the pose of a frame may arrive after its images
            per_topic = [{stamp_to_sec(m.header.stamp) for m in v} for v in received.values()]
            common = set.intersection(*per_topic)
            return len(common) >= 3 and common <= {stamp_to_sec(p.header.stamp) for p in poses}

        ok = wait_until(frames_with_poses, timeout=60.0, spin=lambda: executor.spin_once(timeout_sec=0.1))
        assert ok, (tmp_path / "sim_camera.log").read_text()[-2000:]
        assert stop_program(proc) == 0  # SIGINT: clean exit
    finally:
        stop_program(proc)
        for s in subs:
            node.destroy_subscription(s)

    # one stamp and frame id per frame, on all four topics
    stamps = {t: [stamp_to_sec(m.header.stamp) for m in v] for t, v in received.items()}
    common = sorted(set(stamps["points"]) & set(stamps["image"]) & set(stamps["mask"]) & set(stamps["camera_info"]))
    assert len(common) >= 2
    assert {m.header.frame_id for v in received.values() for m in v} == {"camera_color_optical_frame"}
    by_stamp = {t: {stamp_to_sec(m.header.stamp): m for m in v} for t, v in received.items()}

    doc, gt = read_ground_truth(gt_dir)
    assert [g.name for g in gt] == ["mug", "sphere", "torus"]
    masks = []
    for s in common[:2]:
        cloud, image = by_stamp["points"][s], by_stamp["image"][s]
        mask_msg, info = by_stamp["mask"][s], by_stamp["camera_info"][s]
        xyz, rgb = pointcloud2_to_arrays(cloud)
        assert xyz.shape == (H, W, 3) and rgb.shape == (H, W, 3)
        assert image.encoding == "rgb8" and mask_msg.encoding == "mono16"
        np.testing.assert_array_equal(rgb, image_to_rgb(image))  # packed colour = the image
        mask = image_to_mask(mask_msg)
        masks.append(mask)
        assert set(np.unique(mask)) == {0, 1, 2, 3}
        intr = camera_info_to_intrinsics(info)
        assert (intr.width, intr.height, intr.fx, intr.cx) == (W, H, FX, (W - 1) / 2)
        # the organized cloud is the depth image back-projected with camera_info
        valid = np.isfinite(xyz).all(axis=-1)
        assert 0.5 < valid.mean() < 1.0
        v, u = np.nonzero(valid)
        z = xyz[v, u, 2]
        np.testing.assert_allclose(xyz[v, u, 0], (u - intr.cx) / intr.fx * z, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(xyz[v, u, 1], (v - intr.cy) / intr.fy * z, rtol=1e-4, atol=1e-6)
        # points under mask id k lie on ground-truth object k (camera frame), within the sensor noise
        for g in gt:
            pts = xyz[(mask == g.id) & valid]
            d = surface_distance(g.mesh_in_camera(), pts)
            assert np.median(d) < 0.003 and np.mean(d < 0.01) > 0.9, g.name
    np.testing.assert_array_equal(masks[0], masks[1])  # fixed camera, static scene: same ids, same pixels
    # camera_pose: the pose of the optical frame in the world (z up) at each frame's stamp
    from occnet_ros.ros.conversions import pose_to_transform

    pose_by_stamp = {stamp_to_sec(p.header.stamp): p for p in poses}
    assert set(common) <= set(pose_by_stamp) and {p.header.frame_id for p in poses} == {"world"}
    np.testing.assert_allclose(pose_to_transform(pose_by_stamp[common[0]].pose).matrix(),
                               np.asarray(doc["camera_pose_world"]), atol=1e-6)
    assert doc["frame_id"] == "camera_color_optical_frame" and doc["render_time_s"] > 0


def test_bad_parameter_exits_with_a_clear_message(tmp_path):
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "sim_camera"), "--ros-args", "-p", "camera.fx:=-5.0"],
                          env=node_env(DOMAIN), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "fx and fy must be > 0" in proc.stderr and "camera" in proc.stderr


def test_parameter_file_and_descriptions():
    doc = yaml.safe_load((REPO / "config" / "sim_camera.yaml").read_text())
    cfg = from_dict(SimCameraNodeConfig, doc["/**/sim_camera"]["ros__parameters"])
    assert cfg.scene.objects == ["duck", "mug", "bunny", "torus", "teddy"]
    assert set(flatten(cfg)) == set(flatten(SimCameraNodeConfig()))  # the file sets every parameter
    for name in flatten(SimCameraNodeConfig()):
        assert describe(name)
    assert not set(PARAMETER_DESCRIPTIONS) - set(flatten(SimCameraNodeConfig()))  # no stale entries
    up = np.array(up_in_camera(cfg))
    el = np.radians(cfg.camera.elevation_deg)
    np.testing.assert_allclose(up, [0.0, -np.cos(el), -np.sin(el)], atol=1e-9)
    # the file tells a reconstruction node the up vector of this camera
    np.testing.assert_allclose(doc["/**/reconstruction_node"]["ros__parameters"]["up"], up, atol=1e-9)
    # the same up along an orbit
    pose = cfg.camera.pose_at(0.0)
    cfg.camera.orbit_deg_per_s = 10.0
    pose2 = cfg.camera.pose_at(7.0)
    assert not np.allclose(pose, pose2)
    np.testing.assert_allclose(pose2[:3, :3].T @ [0, 0, 1.0], up, atol=1e-9)


def test_rate_is_respected(ros_context, tmp_path):
    """max_frames frames at rate_hz: the stamps are 1 / rate apart and the node then exits by itself."""
    node, executor = ros_context
    got = []
    sub = node.create_subscription(CameraInfo, "camera_info", lambda m: got.append(stamp_to_sec(m.header.stamp)), 10)
    proc = start_program("sim_camera", ["-p", "rate_hz:=5.0", "-p", "max_frames:=50", "-p", "camera.width:=64",
                                        "-p", "camera.height:=48", "-p", "camera.fx:=60.0", "-p", "camera.fy:=60.0"],
                         DOMAIN, tmp_path / "rate.log")
    try:
        wait_until(lambda: proc.poll() is not None, timeout=60.0, spin=lambda: executor.spin_once(timeout_sec=0.05))
        t_end = time.monotonic() + 0.5
        while time.monotonic() < t_end:
            executor.spin_once(timeout_sec=0.05)
        assert proc.wait(1) == 0
    finally:
        stop_program(proc)
        node.destroy_subscription(sub)
    # discovery may miss the first frames (volatile QoS, like a real camera; in one CI run it missed 13 of
    # the first 15), so 50 frames over 10 s; the rest arrive 0.2 s apart
    assert 5 <= len(got) <= 50, got
    d = np.diff(got)
    assert abs(np.median(d) - 0.2) < 0.03 and np.all((d > 0.05) & (d < 0.45)), d


@pytest.mark.parametrize("context_alive", [False, True])
def test_a_spin_failing_on_the_shut_down_context_is_a_clean_exit(monkeypatch, context_alive):
    """SIGINT shuts rclpy's context down from its signal handler; a spin_once building its wait set at that moment
    raises on the dead context. main() ends with 0 then, but re-raises what fails while the context is valid."""
    from occnet_ros.ros import sim_camera_node

    class DyingExecutor:
        def add_node(self, node):
            pass

        def spin_once(self, timeout_sec=None):
            if not context_alive:
                rclpy.shutdown()  # what the SIGINT handler does
            raise RuntimeError("failed to initialize wait set: the given context is not valid")

    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN))
    monkeypatch.setattr(sim_camera_node, "SingleThreadedExecutor", DyingExecutor)
    args = ["sim_camera", "--ros-args", "-p", "camera.width:=64", "-p", "camera.height:=48", "-p", "rate_hz:=0.5"]
    if context_alive:
        with pytest.raises(RuntimeError, match="wait set"):
            sim_camera_node.main(args)
    else:
        assert sim_camera_node.main(args) == 0
    assert not rclpy.ok()  # shut down either way
