"""The network's input domain: canonical object coordinates in the cube ``[-BOX_HALF, BOX_HALF]^3``.

The object fills the unit cube centred at the origin (:mod:`occnet_ros.reconstruction.normalization`); the
network's box is that cube padded by 10 % on each side (edge 1.1, as in the Occupancy Networks paper). The
feature planes of the local encoder span this box. :func:`grid_axis` holds the coordinates of a regular corner grid
over a box, the one formula MISE's points and the decoder's per-grid plane tables
(:mod:`occnet_ros.network.plane_lattice`) share, so that a corner's coordinate is the same float32 on both sides.
"""

import numpy as np

BOX_HALF = 0.55


def grid_axis(resolution: int, box_half: float) -> np.ndarray:
    """(R + 1,) float32 canonical coordinates of the corners of a grid of ``resolution`` cells per axis over
    ``[-box_half, box_half]``: ``i * (2 * box_half / R) - box_half`` in float64, then rounded to float32."""
    return (np.arange(resolution + 1) * (2.0 * box_half / resolution) - box_half).astype(np.float32)
