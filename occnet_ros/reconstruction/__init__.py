"""One object's observation to a watertight mesh and an occupancy field (pure Python, no ROS): the
canonical frame (:mod:`.normalization`), :class:`~.reconstructor.Reconstructor` and its config, the
occupancy field that answers queries (:mod:`.occupancy_field`), MISE (:mod:`.mise`), the space the sensor
shows empty (:mod:`.known_empty`), surface anchoring (:mod:`.surface_anchor`) and the cached probability
grid (:mod:`.occupancy_grid`)."""
