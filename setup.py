"""pip route install of the hand-written Python package and its commands.

On a ROS 2 workspace the package is built by CMakeLists.txt (ament_cmake, see package.xml); this file is used
by the Makefile's pip route (`pip install -e .`), with the interfaces generated separately by CMake.
"""
from setuptools import find_packages, setup

COMMANDS = {
    "reconstruction_node": "occnet_ros.ros.node_entry:main",
    "sim_camera": "occnet_ros.ros.sim_camera_node:main",
    "occnet_launch": "occnet_ros.cli.launch:main",
    "occnet_reconstruct": "occnet_ros.cli.reconstruct:main",
    "occnet_train": "occnet_ros.cli.train:main",
    "occnet_eval": "occnet_ros.cli.evaluate:main",
    "occnet_heldout": "occnet_ros.cli.heldout:main",
    "occnet_calibrate": "occnet_ros.cli.calibrate:main",
    "occnet_generate_data": "occnet_ros.cli.generate_data:main",
    "occnet_demo": "occnet_ros.cli.demo:main",
    "occnet_bench": "occnet_ros.cli.bench:main",
    "occnet_soak": "occnet_ros.benchmark.soak:main",
    "viewer_node": "occnet_ros.ros.viewer_node:main",
    "occnet_replay": "occnet_ros.cli.replay:main",
}

setup(
    name="occnet_ros",
    version="0.1.0",
    description="Object reconstruction from depth point clouds with an Occupancy Network, for ROS 2",
    license="Apache-2.0",
    packages=find_packages(include=["occnet_ros", "occnet_ros.*"]),
    package_data={"occnet_ros": ["weights/*.pt", "weights/*.md"]},
    python_requires=">=3.10",
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in COMMANDS.items()]},
)
