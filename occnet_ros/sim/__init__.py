"""Simulated tabletop RGB-D camera (PyBullet, DIRECT mode) with ground truth; no ROS types.

    from occnet_ros.sim import SceneConfig, TabletopScene, CameraConfig, SimCamera, ground_truth
    with TabletopScene(SceneConfig(seed=0, num_objects=4)) as scene:
        cam = SimCamera(scene, CameraConfig())
        frame = cam.render(stamp=0.0, index=0)        # rgb, depth, organized points, mask
        gt = ground_truth(scene, frame.camera_pose)    # meshes and poses for scoring
"""
from occnet_ros.sim.camera import CameraConfig, RGBDFrame, SimCamera
from occnet_ros.sim.ground_truth import (
    GroundTruthObject, ground_truth, read_ground_truth, write_ground_truth,
)
from occnet_ros.sim.scene import SceneConfig, SceneError, TabletopScene, object_mesh

__all__ = ["CameraConfig", "GroundTruthObject", "RGBDFrame", "SceneConfig", "SceneError", "SimCamera",
           "TabletopScene", "ground_truth", "object_mesh", "read_ground_truth", "write_ground_truth"]
