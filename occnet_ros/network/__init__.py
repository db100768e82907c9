"""The Occupancy Network itself (pure torch, no ROS): the model with separate ``encode`` / ``decode``
(:mod:`.model`), its two encoder kinds (:mod:`.model_global`, :mod:`.model_local`) and the checkpoint
format (:mod:`.checkpoint`)."""
