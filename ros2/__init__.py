"""lbedge on ROS 2: an application built on the runtime and ``lbedge.sensors``.

- :mod:`lbedge.ros2.node`: the node (rclpy, imported only there): subscribes to the robot's camera, depth, thermal
  and audio topics, publishes ``vision_msgs/Classification`` per source and fused, ``vision_msgs/LabelInfo``, an
  annotated image and diagnostics; labels change while it runs (parameter or ``input_query`` topic).
- :mod:`lbedge.ros2.core`: all the node's logic without rclpy (tested without ROS).
- :mod:`lbedge.ros2.config`: its parameters, defaults and checks.
- :mod:`lbedge.ros2.outputs`, :mod:`lbedge.ros2.messages`: results as vision_msgs and diagnostic messages, through
  rclpy's or rosbags' message classes.
- :mod:`lbedge.ros2.bag`: ``lbedge label-bag``, a copy of a rosbag2 recording with the classifications added.

Message -> frame conversion is a sensor's job: :mod:`lbedge.sensors.ros_messages`, :class:`lbedge.sensors.RosbagSource`
and :class:`lbedge.sensors.TopicSource`. The ament package that launches the node is ``ros2/package/lbedge_ros``.
"""
