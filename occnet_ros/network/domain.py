"""The network's input domain: canonical object coordinates in the cube ``[-BOX_HALF, BOX_HALF]^3``.

The object fills the unit cube centred at the origin (:mod:`occnet_ros.reconstruction.normalization`); the
network's box is that cube padded by 10 % on each side (edge 1.1, as in the Occupancy Networks paper). The
feature planes of the local encoder span this box.
"""

BOX_HALF = 0.55
