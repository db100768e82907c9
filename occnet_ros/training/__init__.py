"""Training of the Occupancy Network: :mod:`.config` (``TrainConfig``) and :mod:`.trainer` (the loop)."""
