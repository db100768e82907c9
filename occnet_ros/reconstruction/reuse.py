"""Whether an object's previous reconstruction still answers a new observation (``reuse_tolerance``): the same
network and threshold and canonical frames within a tolerance, so its code, mesh and grid are kept instead of
encoding and meshing again (pure Python, no ROS)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from occnet_ros.network.model import OccupancyNetwork
from occnet_ros.reconstruction.normalization import CanonicalFrame

if TYPE_CHECKING:
    from occnet_ros.reconstruction.reconstructed_object import ReconstructedObject

__all__ = ["frames_close", "can_reuse"]


def frames_close(a: CanonicalFrame, b: CanonicalFrame, tolerance: float) -> bool:
    """Whether two observations give the same object frame within ``tolerance``: centres closer than
    ``tolerance * scale``, scales within ``tolerance * scale``, and rotation matrices within
    ``tolerance`` (Frobenius norm of the difference, about the rotation angle in radians * 1.4)."""
    s = max(a.scale, b.scale)
    return bool(np.linalg.norm(a.center - b.center) <= tolerance * s and abs(a.scale - b.scale) <= tolerance * s
                and np.linalg.norm(a.rotation - b.rotation) <= tolerance)


def can_reuse(previous: ReconstructedObject | None, model: OccupancyNetwork, frames: list[CanonicalFrame],
              threshold: float, tolerance: float, extract_mesh: bool) -> bool:
    """Whether ``previous`` (an object's last reconstruction) answers a new observation as it is: made by
    ``model`` at ``threshold``, with a mesh when one is asked for, and with one canonical frame per entry
    of ``frames`` (the object's own frame first, then the other cameras' of a fused cloud), each within
    ``tolerance`` of the new one (:func:`frames_close`). ``tolerance`` 0 never reuses."""
    if previous is None or tolerance <= 0 or (extract_mesh and previous.mesh is None):
        return False
    old = previous.occupancy
    if old.model is not model or previous.threshold != threshold or len(old.codes) != len(frames):
        return False
    return all(frames_close(c.frame, f, tolerance) for c, f in zip(old.codes, frames))
