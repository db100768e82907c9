"""Training-data generation: procedural shapes (``shapes``), pybullet_data meshes (``mesh_sources``),
a virtual depth camera (``virtual_camera``), sample generation (``generate``) and the cached dataset
the trainer uses (``dataset``: ``DataConfig``, ``load_or_generate``, ``OccupancyDataset``)."""
