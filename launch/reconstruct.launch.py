"""Start reconstruction_node with config/reconstruct.yaml (and, optionally, the simulated camera).

    ros2 launch occnet_ros reconstruct.launch.py [params_file:=F] [namespace:=NS] [points:=/cam/points]
        [mask:=...] [image:=...] [camera_info:=...] [camera_pose:=...] [remaps:="objects:=/perception/objects ..."]
        [use_sim_camera:=true] [sim_params_file:=F]

What is started comes from occnet_ros.ros.launch_spec, the same source as the pip-route command
`occnet_launch`; this file only maps launch arguments onto it.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from occnet_ros.ros import launch_spec


def _nodes(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    remaps = [(t, arg(t)) for t in launch_spec.NODE_INPUTS if arg(t) and arg(t) != t]
    remaps += [launch_spec.parse_remap(r) for r in arg("remaps").split()]
    specs = launch_spec.launch_nodes(
        params_file=arg("params_file") or None, namespace=arg("namespace"), remaps=remaps,
        use_sim_camera=arg("use_sim_camera").lower() in ("true", "1", "yes"),
        sim_params_file=arg("sim_params_file") or None)
    env = launch_spec.dds_environment()  # Fast DDS transports and profile, where the user has not set them
    return [Node(package=s.package, executable=s.executable, name=s.name, namespace=s.namespace,
                 parameters=list(s.parameters), remappings=list(s.remappings), output="screen",
                 additional_env=env)
            for s in specs]


def generate_launch_description():
    args = [
        DeclareLaunchArgument("params_file", default_value=str(launch_spec.default_params_file()),
                              description="parameter file of reconstruction_node"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the started nodes"),
        DeclareLaunchArgument("remaps", default_value="",
                              description="extra remaps of the node's names, space separated from:=to rules"),
        DeclareLaunchArgument("use_sim_camera", default_value="false",
                              description="also start the simulated RGB-D camera (sim_camera)"),
        DeclareLaunchArgument("sim_params_file", default_value=str(launch_spec.default_sim_params_file()),
                              description="parameter file of sim_camera"),
    ]
    args += [DeclareLaunchArgument(t, default_value=t, description=f"topic the node reads as '{t}'")
             for t in launch_spec.NODE_INPUTS]
    return LaunchDescription(args + [OpaqueFunction(function=_nodes)])
