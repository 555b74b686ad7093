"""A robot's sensors and lbedge together: an Intel RealSense (colour and depth, realsense2_camera), a USB radiometric
thermal camera (a FLIR Lepton on a PureThermal board, through usb_cam in mono16) and, with ``audio:=true``, a
microphone (audio_capture, raw PCM), classified by lbedge with config/realsense_thermal.yaml.

    ros2 launch lbedge_ros realsense_thermal.launch.py thermal_device:=/dev/video2 audio:=true
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("lbedge_ros")
    realsense = os.path.join(get_package_share_directory("realsense2_camera"), "launch", "rs_launch.py")
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "realsense_thermal.yaml")),
            DeclareLaunchArgument("thermal_device", default_value="/dev/video2", description="The thermal camera"),
            DeclareLaunchArgument("audio", default_value="false", description="Also start audio_capture"),
            # colour /camera/camera/color/image_raw (rgb8), depth /camera/camera/depth/image_rect_raw (16UC1 mm)
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(realsense),
                launch_arguments={"enable_color": "true", "enable_depth": "true"}.items(),
            ),
            # the Lepton's radiometric frames (centikelvin) as mono16 on /thermal/image_raw
            Node(
                package="usb_cam",
                executable="usb_cam_node_exe",
                name="thermal",
                namespace="thermal",
                parameters=[
                    {
                        "video_device": LaunchConfiguration("thermal_device"),
                        "pixel_format": "mono16",
                        "image_width": 160,
                        "image_height": 120,
                        "framerate": 9.0,
                        "frame_id": "thermal_optical_frame",
                    }
                ],
                output="screen",
            ),
            # raw 16 kHz mono S16LE PCM on /audio/audio_stamped (format wave: mp3 cannot be classified)
            Node(
                package="audio_capture",
                executable="audio_capture_node",
                name="audio_capture",
                namespace="audio",
                parameters=[{"format": "wave", "channels": 1, "sample_rate": 16000, "sample_format": "S16LE"}],
                condition=IfCondition(LaunchConfiguration("audio")),
                output="screen",
            ),
            Node(
                package="lbedge_ros",
                executable="lbedge_node",
                name="lbedge",
                parameters=[LaunchConfiguration("params_file")],
                output="screen",
            ),
        ]
    )
