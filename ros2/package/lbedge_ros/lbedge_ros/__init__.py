"""The lbedge_ros ament package: launches the lbedge node, whose code is the pip-installed lbedge (lbedge.ros2)."""
