"""The lbedge node alone, beside drivers that already run: ``ros2 launch lbedge_ros lbedge.launch.py
params_file:=my_robot.yaml`` (default: the package's config/lbedge.yaml, one RGB camera)."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("lbedge_ros"), "config", "lbedge.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params, description="lbedge's parameters"),
            DeclareLaunchArgument("namespace", default_value="", description="Namespace of the lbedge node"),
            DeclareLaunchArgument("log_level", default_value="info"),
            Node(
                package="lbedge_ros",
                executable="lbedge_node",
                name="lbedge",
                namespace=LaunchConfiguration("namespace"),
                parameters=[LaunchConfiguration("params_file")],
                arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
                output="screen",
            ),
        ]
    )
