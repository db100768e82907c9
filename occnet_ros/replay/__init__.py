"""``occnet_replay``: a rosbag2 recording through the node's own decoding and frame pipeline (:mod:`.replay`) into
meshes, a report with pictures (:mod:`.report`) and an output bag."""
