"""ROS 2 glue of occnet_ros: message conversions at the edge, markers, parameters and the
``reconstruction_node``. Importing this package does not import rclpy; its modules import the message
packages they convert.
"""
