"""rosbag2 recordings without a ROS installation, pure (no rclpy): read (:mod:`.reader`) and write
(:mod:`.writer`) MCAP / sqlite3 bags of raw CDR messages with ``rosbags``, and pair and pace a recording
(:mod:`.timeline`). The rclpy side is :mod:`occnet_ros.ros.bag_messages` (deserialize, serialize) and
:mod:`occnet_ros.ros.bag_recorder` (``sim_camera``'s recorder); the replay itself is :mod:`occnet_ros.replay`."""
