#!/usr/bin/env python
"""The lbedge ROS 2 node, run from a clone: subscribes to the robot's camera, depth, thermal and audio topics (its
drivers keep running) and publishes vision_msgs/Classification per source and fused, vision_msgs/LabelInfo, an
annotated image and diagnostics; labels change while it runs. This script is the node itself,
``lbedge.ros2.node``; the ament package ``ros2/package/lbedge_ros`` launches the same node (docs/ros2.md).

Needs ROS 2 (Humble on JetPack 6 / Ubuntu 22.04) with vision_msgs, sourced in the shell; rclpy is imported by the
node only, never by the rest of lbedge.

    source /opt/ros/humble/setup.bash
    python3 examples/ros2_labels_node.py --ros-args --params-file ros2/package/lbedge_ros/config/lbedge.yaml
    ros2 topic echo /lbedge/color/classification
    ros2 topic echo /lbedge/label_info                  # class id -> label (latched)
    ros2 topic pub --once /lbedge/input_query std_msgs/String "data: 'a person, a forklift'"
    ros2 param set /lbedge labels "['a person', 'a pallet']"

Without ROS 2, the same code runs on recordings: ``lbedge demo --rosbag run --topic /camera/color/image_raw ...``
and ``lbedge label-bag run run_labelled ...``.
"""

from __future__ import annotations

from lbedge.ros2.node import main

if __name__ == "__main__":
    main()
