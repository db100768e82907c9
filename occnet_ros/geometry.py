"""The one geometry of occnet_ros: a pinhole camera, a plane and a rigid transform (numpy, no ROS).

Every module that projects points into an image, unprojects a depth image, tests points against a plane
or moves points between frames uses these three types, so that the rounding of a pixel, the sign of a
plane and the direction of a transform mean the same thing everywhere.

Conventions:
* Camera optical frame (ROS ``*_optical_frame``): x right, y down, z forward, metres.
* Pixel ``(row, col)``: the pixel whose centre is at integer image coordinates ``(v, u) = (row, col)``;
  a point projects onto the nearest pixel centre, ``floor(u + 0.5)``; flat pixel index ``row * width + col``.
* Depth: the optical z of a point, metres (not the range along the ray).
* :class:`RigidTransform` ``T_a_b`` maps points written in frame ``b`` into frame ``a``: ``p_a = R p_b + t``;
  a camera pose in a frame is the transform from the camera's optical frame into that frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["PinholeCamera", "Plane", "RigidTransform", "TransformError", "all_columns", "finite_rows",
           "rotate_rows"]


class TransformError(RuntimeError):
    """A transform between two frames that is not known (the message says which frames and why)."""


def rotate_rows(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``points @ matrix.T`` for (N, 3) points and a (3, 3) matrix, without the BLAS.

    numpy's ``@`` hands large products to the multi-threaded BLAS, whose threads keep spinning for a
    while after they return; on 2 cores they then starve the network's next torch call (the finest MISE
    level took 190 ms instead of 90 ms when a 100k-point transform ran just before it). ``einsum``
    without ``optimize`` runs in the calling thread and costs about 2 ms per 100k points."""
    return np.einsum("nk,jk->nj", points, matrix)


def all_columns(mask: np.ndarray) -> np.ndarray:
    """mask (N, 3) bool -> (N,) bool, True where all three entries are: ``mask.all(axis=1)`` as three column ANDs
    (numpy's reduction along a 3-long last axis takes several times as long: 4.3 against 0.6 ms for the finiteness
    of a 640x480 cloud on a 2-core AMD EPYC). For point tests: inside a box, finite, in front of a camera."""
    m = np.asarray(mask, dtype=bool).reshape(-1, 3)
    return m[:, 0] & m[:, 1] & m[:, 2]


def finite_rows(points: np.ndarray) -> np.ndarray:
    """points (N, 3) -> (N,) bool, True where all three coordinates are finite (``np.isfinite(points).all(axis=1)``,
    by :func:`all_columns`)."""
    return all_columns(np.isfinite(np.asarray(points).reshape(-1, 3)))


@dataclass(frozen=True, kw_only=True)
class PinholeCamera:
    """A pinhole camera without distortion: image ``width`` x ``height`` pixels, focal lengths ``fx``,
    ``fy`` and principal point ``cx``, ``cy`` in pixels. The defaults are a 640x480 RealSense-D435-like
    depth stream (the virtual camera of the training data and of the evaluation)."""

    width: int = 640
    height: int = 480
    fx: float = 615.0
    fy: float = 615.0
    cx: float = 319.5
    cy: float = 239.5

    def validate(self) -> None:
        """Raise ValueError for a size below 1 pixel, focal lengths that are not finite and positive or a
        principal point that is not finite."""
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not (np.isfinite(self.fx) and np.isfinite(self.fy) and self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be finite and positive, got fx={self.fx} fy={self.fy}")
        if not (np.isfinite(self.cx) and np.isfinite(self.cy)):
            raise ValueError(f"principal point must be finite, got cx={self.cx} cy={self.cy}")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the image, pixels."""
        return self.height, self.width

    def matrix(self) -> np.ndarray:
        """(3, 3) float64 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points: (N, 3) optical frame, metres -> (u (N,), v (N,)) float64 continuous image coordinates
        (u = column, v = row): ``u = fx x / z + cx``, ``v = fy y / z + cy``. Inf or NaN at z = 0; a point
        behind the camera (z < 0) gets the finite coordinates of its mirror image through the centre
        (:meth:`pixels` rejects both)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self.fx * p[:, 0] / p[:, 2] + self.cx, self.fy * p[:, 1] / p[:, 2] + self.cy

    def pixels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """points: (N, 3) optical frame, metres -> (row (N,) int64, col (N,) int64, valid (N,) bool): the
        pixel whose centre is nearest to each point's projection. Valid: finite, in front of the camera
        (z > 0) and inside the image; row and col are 0 where not valid."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        col, row = self.project(p)  # fresh arrays: rounded in place
        for a in (col, row):
            a += 0.5
            np.floor(a, out=a)
        with np.errstate(invalid="ignore"):  # NaN compares False: no separate finiteness test needed
            valid = (p[:, 2] > 0) & (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)
        invalid = ~valid
        col[invalid] = 0.0
        row[invalid] = 0.0
        return row.astype(np.int64), col.astype(np.int64), valid

    def pixel_index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points: (N, 3) optical frame, metres -> (flat pixel index ``row * width + col`` (N,) int64,
        valid (N,) bool), see :meth:`pixels`."""
        row, col, valid = self.pixels(points)
        return row * self.width + col, valid

    def rays(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Pixel centres ``rows``, ``cols`` (any equal shapes) -> (..., 3) float64 ray directions in the
        optical frame, scaled to z = 1 (a point at depth d on the ray is ``d * ray``)."""
        r, c = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
        return np.stack([(c - self.cx) / self.fx, (r - self.cy) / self.fy, np.ones(np.broadcast(r, c).shape)],
                        axis=-1)

    def unproject(self, depth: np.ndarray, roi_origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """depth: (h, w) optical z, metres (NaN = no return) -> (h, w, 3) float32 points in the optical frame
        (NaN where the depth is NaN). ``roi_origin``: (row, col) of ``depth[0, 0]`` in the full image, for
        crops."""
        d = np.asarray(depth, dtype=np.float64)
        rows, cols = np.mgrid[0:d.shape[0], 0:d.shape[1]]
        return (self.rays(rows + roi_origin[0], cols + roi_origin[1]) * d[..., None]).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Plane:
    """The plane ``normal . p + offset = 0``; ``normal``: (3,) float64 unit vector pointing to the plane's
    positive side (for a support plane: towards the objects, i.e. up), ``offset`` in metres. The normal
    is stored as given (use :meth:`from_coefficients` to normalise)."""

    normal: np.ndarray
    offset: float

    def __post_init__(self):
        object.__setattr__(self, "normal", np.array(self.normal, dtype=np.float64).reshape(3))
        object.__setattr__(self, "offset", float(self.offset))

    @classmethod
    def from_coefficients(cls, a: float, b: float, c: float, d: float, towards=None) -> "Plane":
        """The plane ``a x + b y + c z + d = 0`` with its normal scaled to unit length; with ``towards``
        ((3,) direction), the normal is turned to lie on its side. ValueError when (a, b, c) is zero or
        a coefficient is not finite."""
        coef = np.array([a, b, c, d], dtype=np.float64)
        n = float(np.linalg.norm(coef[:3]))
        if not np.isfinite(coef).all() or n < 1e-12:
            raise ValueError(f"plane coefficients must be finite with (a, b, c) not zero, got {coef.tolist()}")
        plane = cls(coef[:3] / n, float(coef[3] / n))
        if towards is not None and float(np.dot(plane.normal, np.asarray(towards, np.float64))) < 0:
            plane = plane.flipped()
        return plane

    def flipped(self) -> "Plane":
        """The same plane with the other side positive."""
        return Plane(-self.normal, -self.offset)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) metres -> (N,) float64 signed distances (positive on the normal's side)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        # einsum, not @: no BLAS threads left spinning next to the network (see rotate_rows)
        return np.einsum("nk,k->n", p, self.normal) + self.offset


@dataclass(frozen=True, eq=False)
class RigidTransform:
    """A rotation and a translation: ``apply(p) = rotation @ p + translation``. ``rotation``: (3, 3)
    float64 proper rotation; ``translation``: (3,) float64, metres (both copied on construction; only
    :meth:`from_matrix` checks that the rotation is proper). ``T_a_b`` takes points of frame ``b`` into
    frame ``a``; ``T_a_b @ T_b_c`` is ``T_a_c``."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self):
        object.__setattr__(self, "rotation", np.array(self.rotation, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "translation", np.array(self.translation, dtype=np.float64).reshape(3))

    @classmethod
    def identity(cls) -> "RigidTransform":
        """The transform that changes nothing (``T_a_a``)."""
        return cls()

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, tolerance: float = 1e-4) -> "RigidTransform":
        """From a (4, 4) homogeneous matrix. ValueError when it is not finite, its last row is not
        (0, 0, 0, 1) or its upper-left block is not a proper rotation within ``tolerance``."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise ValueError(f"a rigid transform needs a finite (4, 4) matrix, got shape {m.shape}")
        if np.abs(m[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > tolerance:
            raise ValueError(f"the last row of a rigid transform must be (0, 0, 0, 1), got {m[3].tolist()}")
        r = m[:3, :3]
        if np.abs(r @ r.T - np.eye(3)).max() > tolerance or np.linalg.det(r) < 0:
            raise ValueError("the rotation block of the transform is not a proper rotation matrix")
        return cls(r, m[:3, 3])

    @classmethod
    def from_quaternion(cls, xyzw, translation) -> "RigidTransform":
        """From a unit quaternion (x, y, z, w) (normalised here; ValueError when zero or not finite) and a
        (3,) translation, metres (geometry_msgs Pose / Transform)."""
        q = np.asarray(xyzw, dtype=np.float64).reshape(4)
        n = float(np.linalg.norm(q))
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        if not (np.isfinite(q).all() and np.isfinite(t).all()) or n < 1e-12:
            raise ValueError(f"a rigid transform needs a finite non-zero quaternion and a finite translation, "
                             f"got {q.tolist()}, {t.tolist()}")
        x, y, z, w = q / n
        r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        return cls(r, t)

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.rotation, self.translation
        return m

    def inverse(self) -> "RigidTransform":
        """``T_b_a`` of ``T_a_b``: rotation transposed, translation ``-R^T t``."""
        r = self.rotation
        return RigidTransform(r.T, -(r.T @ self.translation))

    def __matmul__(self, other: "RigidTransform") -> "RigidTransform":
        """``T_a_b @ T_b_c`` = ``T_a_c`` (apply ``other`` first)."""
        if not isinstance(other, RigidTransform):
            raise TypeError(f"a RigidTransform composes with a RigidTransform, not {type(other).__name__}")
        return RigidTransform(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) metres -> (N, 3) float64 in the target frame (no BLAS threads, see
        :func:`rotate_rows`)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return rotate_rows(p, self.rotation) + self.translation

    def apply_direction(self, vectors: np.ndarray) -> np.ndarray:
        """vectors: (N, 3) or (3,) -> the same shape float64, rotated only."""
        v = np.asarray(vectors, dtype=np.float64)
        return rotate_rows(v.reshape(-1, 3), self.rotation).reshape(v.shape)
