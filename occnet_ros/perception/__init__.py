"""A camera frame to reconstructed objects, and the query logic over them (pure Python, no ROS types):
stamp pairing (:mod:`.frame_sync`), PointCloud2 byte layouts (:mod:`.pointcloud2`), segmentation and
cleaning (:mod:`.segmentation`, :mod:`.cloud_filter`), the frame pipeline and its config
(:mod:`.frame_pipeline`, :mod:`.config`), mesh simplification for publishing (:mod:`.mesh_ops`,
:mod:`.decimation_worker`), the current objects (:mod:`.object_store`) and occupancy queries over them
(:mod:`.query`). The ROS node (:mod:`occnet_ros.ros`) converts messages at the edge and calls this."""
