"""Live 3D view of the reconstruction in a web browser (the Rerun viewer), for machines without RViz.

Pure code (numpy, no rclpy): :mod:`~occnet_ros.viewer.config` (the viewer node's parameters),
:mod:`~occnet_ros.viewer.objects_cdr` (serialized ``ReconstructedObjectArray`` -> arrays),
:mod:`~occnet_ros.viewer.scene` (cloud subsampling, mesh and probability colours, poses),
:mod:`~occnet_ros.viewer.query_points` (the node's ``query_points`` cloud). Rerun logging:
:mod:`~occnet_ros.viewer.rerun_sink`. ROS glue: :mod:`occnet_ros.ros.viewer_node`.
"""
