"""Evaluation of the reconstruction against baselines (``occnet_eval``).

* :mod:`~occnet_ros.evaluation.metrics`: IoU, Chamfer-L1, normal consistency, F-score (normalised frame:
  ground-truth bounding box longest edge 1).
* :mod:`~occnet_ros.evaluation.baselines`: convex hull and Poisson reconstruction of the observed points.
* :mod:`~occnet_ros.evaluation.protocol`: the deterministic tabletop views (1 view, k fused views).
* :mod:`~occnet_ros.evaluation.runner`: :class:`EvalConfig` and :func:`run_evaluation`.
* :mod:`~occnet_ros.evaluation.report`: JSON, markdown tables and PNG pictures.

Submodules are imported explicitly (the runner pulls in torch; metrics and baselines do not).
"""
