"""Gravity-up of a frame from its dominant support plane, and which up a frame is reconstructed with.

Pure numpy (no ROS): the node, ``occnet_reconstruct`` and a bag replay call the same code.

Frames and units: every point, direction and viewpoint is in the cloud's frame (for a camera: its optical
frame, x right, y down, z forward), metres; angles in degrees.

Rules (:class:`GravityTracker`):

* a ``world_frame`` (its +z is up) wins: source ``world_frame``, nothing is estimated;
* an explicit ``up`` is used as given (source ``parameter``); each frame it is checked against the
  dominant support plane (searched around it, and around a level camera's up when it lies outside that
  cone), and a warning (rate-limited) names the angle and the value to set when the plane's normal is
  further from it than the segmentation accepts (``segmentation.plane_max_tilt_deg``);
* with neither, up is estimated from the frame's support plane (:func:`estimate_up`, source
  ``estimated``): reported at the first estimate and again (rate-limited) when it moves by more than
  ``gravity.report_deg``; a frame without a plane keeps the last estimate (said so); before any estimate
  the level camera's :data:`DEFAULT_UP` stands (source ``default``, with a warning, rate-limited).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np

from occnet_ros.config_io import setting
from occnet_ros.geometry import Plane, finite_rows
from occnet_ros.perception.segmentation import fit_plane_ransac

__all__ = ["DEFAULT_UP", "GravityConfig", "GravityTracker", "UpDecision", "UpEstimate", "angle_deg",
           "estimate_up", "format_up", "seen_through_fraction"]

DEFAULT_UP = (0.0, -1.0, 0.0)
"""Gravity-up in a level camera's optical frame (image rows run down): the up used before any estimate."""

UpSource = Literal["estimated", "parameter", "world_frame", "default"]
LogLevel = Literal["info", "warning"]


@dataclass
class GravityConfig:
    """How gravity-up is estimated from the support plane of a frame (each field's ``doc``)."""

    max_tilt_deg: float = setting(75.0, doc="the support plane that gives gravity-up must have its normal within "
                                  "this angle of the configured up (of a level camera's [0, -1, 0] while up is not "
                                  "set), degrees: a wall seen head-on (90 degrees) never passes; a camera looking "
                                  "down more steeply than this needs up or world_frame", range=(1.0, 89.0))
    min_plane_fraction: float = setting(0.2, doc="a plane gives gravity-up only when it holds at least this "
                                        "fraction of the frame's finite points", range=(0.01, 1.0))
    max_seen_through: float = setting(0.02, doc="a support plane is opaque: a plane is refused when more than this "
                                      "fraction of the points lies below it within its own footprint (the cap of a "
                                      "round object, a face of an object floating in view)", range=(0.0, 1.0))
    min_plane_width: float = setting(0.2, doc="a plane gives gravity-up only when its points span at least this "
                                     "width along its narrower direction (2 sqrt(3) x their standard deviation "
                                     "across it), m: a table does, the flat face of one object does not",
                                     range=(0.0, 100.0))
    plane_distance: float = setting(0.01, doc="RANSAC inlier distance of that plane, m", range=(1e-4, 0.5))
    iterations: int = setting(400, doc="RANSAC hypotheses of that plane", range=(10, 100000))
    max_points: int = setting(20000, doc="the estimate uses at most this many of the frame's points, drawn at "
                              "random", range=(100, 10000000))
    hold_deg: float = setting(1.0, doc="a new estimate within this angle of the one in use keeps the one in use "
                              "(so that objects' canonical frames do not jitter between frames), degrees",
                              range=(0.0, 30.0))
    report_deg: float = setting(5.0, doc="the log reports the estimated up again when it moved by more than this "
                                "since it was last reported, degrees", range=(0.0, 180.0))

    def validate(self) -> None:
        if not 1.0 <= self.max_tilt_deg <= 89.0:
            raise ValueError(f"max_tilt_deg must be within [1, 89], got {self.max_tilt_deg}")
        if not 0.0 < self.min_plane_fraction <= 1.0 or not 0.0 <= self.max_seen_through <= 1.0:
            raise ValueError(f"min_plane_fraction must be in (0, 1] and max_seen_through in [0, 1], got "
                             f"{self.min_plane_fraction}, {self.max_seen_through}")
        if self.min_plane_width < 0:
            raise ValueError(f"min_plane_width must be >= 0, got {self.min_plane_width}")
        if self.plane_distance <= 0 or self.iterations < 1 or self.max_points < 3:
            raise ValueError(f"plane_distance must be > 0, iterations >= 1 and max_points >= 3, got "
                             f"{self.plane_distance}, {self.iterations}, {self.max_points}")
        if self.hold_deg < 0 or self.report_deg < 0:
            raise ValueError(f"hold_deg and report_deg must be >= 0, got {self.hold_deg}, {self.report_deg}")


@dataclass(frozen=True, eq=False)
class UpEstimate:
    """Gravity-up from a support plane. ``up``: (3,) float64 unit normal of ``plane`` (cloud frame), on the
    camera's side; ``plane``: the support plane (positive side up); ``inlier_fraction``: share of the points
    used that lie within ``plane_distance`` of it; ``prior_angle_deg``: angle between ``up`` and the prior."""

    up: np.ndarray
    plane: Plane
    inlier_fraction: float
    prior_angle_deg: float


@dataclass(frozen=True, eq=False)
class UpDecision:
    """The up a frame is reconstructed with. ``up``: (3,) float64 unit vector, cloud frame; ``source``: where
    it came from; ``message``: what to log now (None: nothing, e.g. rate-limited) at ``level``;
    ``estimate``: this frame's plane estimate (None when none was made or found)."""

    up: np.ndarray
    source: UpSource
    message: str | None = None
    level: LogLevel = "info"
    estimate: UpEstimate | None = None


def _unit(v, name: str) -> np.ndarray:
    u = np.asarray(v, np.float64).reshape(-1)
    n = float(np.linalg.norm(u)) if u.shape == (3,) else 0.0
    if u.shape != (3,) or not np.isfinite(u).all() or n < 1e-12:
        raise ValueError(f"{name} must be 3 finite numbers, not all zero, got {np.asarray(v).tolist()}")
    return u / n


def angle_deg(a, b) -> float:
    """Angle between two (3,) directions (any non-zero length), degrees in [0, 180]."""
    u, v = _unit(a, "a"), _unit(b, "b")
    return float(np.degrees(np.arccos(np.clip(u @ v, -1.0, 1.0))))


def format_up(v) -> str:
    """``[x, y, z]`` with 3 decimals: the text to paste as an ``up`` parameter value."""
    return "[" + ", ".join(f"{float(x):.3f}" for x in np.asarray(v).reshape(3)) + "]"


def seen_through_fraction(points: np.ndarray, plane: Plane, distance: float, cells: int = 32) -> float:
    """Share of ``points`` (N, 3) that lie more than ``distance`` below ``plane`` *within its footprint*: the
    orthogonal projection onto the plane falls into a cell of a ``cells`` x ``cells`` grid (over the inliers'
    extent in the plane) that holds inliers (points within ``distance``). An opaque support plane hides what
    is below it, so such points say it is no support plane; points below it beyond its edge (the floor past a
    table) project outside the footprint."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    if p.shape[0] == 0:
        return 0.0
    d = plane.signed_distance(p)
    inl, below = np.abs(d) < distance, d < -distance
    if not inl.any() or not below.any():
        return 0.0
    n = plane.normal
    a = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    uv = np.stack([p @ a, p @ np.cross(n, a)], axis=1)
    lo, hi = uv[inl].min(axis=0), uv[inl].max(axis=0)
    size = np.maximum(hi - lo, 1e-9) / cells
    cell = np.floor((uv - lo) / size).astype(np.int64)
    inside = (cell >= 0).all(axis=1) & (cell < cells).all(axis=1)
    flat = cell[:, 0] * cells + cell[:, 1]
    occupied = np.zeros(cells * cells, bool)
    occupied[flat[inl & inside]] = True
    hidden = below & inside
    hidden[hidden] = occupied[flat[hidden]]
    return float(hidden.sum()) / p.shape[0]


def estimate_up(xyz: np.ndarray, viewpoint, config: GravityConfig, rng: np.random.Generator,
                prior=DEFAULT_UP) -> UpEstimate | None:
    """Gravity-up of one frame from its dominant support plane, or None when it has none.

    xyz: (N, 3) or (H, W, 3) points, cloud frame, metres (NaN/inf rows ignored); viewpoint: (3,) camera
    centre, cloud frame, metres; prior: (3,) the up the plane's normal must lie within
    ``config.max_tilt_deg`` of. The plane is the RANSAC plane (least-squares refined) with most inliers
    among those within that cone, of ``config.max_points`` random finite points at most (drawn from
    ``4 * max_points`` random rows, with repetition, of a larger cloud); it must face the camera
    (the viewpoint on its positive side), hold ``config.min_plane_fraction`` of the points, span
    ``config.min_plane_width`` and hide what is below it (:func:`seen_through_fraction` at most
    ``config.max_seen_through``). ``up`` is its normal.
    """
    raw = np.asarray(xyz)
    if raw.ndim < 2 or raw.shape[-1] != 3 or not np.issubdtype(raw.dtype, np.number):
        raise ValueError(f"xyz must be (N, 3) or (H, W, 3) numeric points, got shape {raw.shape} {raw.dtype}")
    raw = raw.reshape(-1, 3)
    prior_u = _unit(prior, "prior up")
    vp = np.asarray(viewpoint, np.float64).reshape(3)
    if raw.shape[0] > 4 * config.max_points:  # a large frame: test only a random sample of rows for finiteness
        raw = raw[np.sort(rng.integers(0, raw.shape[0], 4 * config.max_points))]
    finite = np.flatnonzero(finite_rows(raw))
    if finite.size > config.max_points:
        finite = finite[rng.choice(finite.size, config.max_points, replace=False)]
    p = raw[finite].astype(np.float64)
    if p.shape[0] < 3:
        return None
    plane = fit_plane_ransac(p, config.plane_distance, config.iterations, rng, up=prior_u,
                             max_tilt_deg=config.max_tilt_deg, viewpoint=vp)
    if plane is None:
        return None
    for _ in range(2):  # RANSAC's one refinement starts from a 3-point plane: refit on the refined inliers
        q = p[np.abs(plane.signed_distance(p)) < config.plane_distance]
        if q.shape[0] < 3:
            return None
        c = q.mean(axis=0)
        _, spread, axes = np.linalg.svd(q - c, full_matrices=False)
        normal = axes[2]
        plane = Plane.from_coefficients(*normal, -float(normal @ c), towards=prior_u)
    width = 2.0 * np.sqrt(3.0) * spread[1] / np.sqrt(q.shape[0])  # of a uniform strip with that deviation
    tilt = angle_deg(plane.normal, prior_u)
    fraction = float((np.abs(plane.signed_distance(p)) < config.plane_distance).mean())
    if (tilt > config.max_tilt_deg or fraction < config.min_plane_fraction or width < config.min_plane_width
            or float(plane.signed_distance(vp[None])[0]) <= config.plane_distance):
        return None  # outside the cone, too small, or seen from below (the camera is not above it)
    if seen_through_fraction(p, plane, config.plane_distance) > config.max_seen_through:
        return None
    return UpEstimate(up=plane.normal.copy(), plane=plane, inlier_fraction=fraction, prior_angle_deg=tilt)


@dataclass
class _Throttle:
    """Per-message-kind rate limit: :meth:`ready` is True at most once per ``period`` seconds of ``clock``."""

    period: float
    clock: Callable[[], float]
    last: dict[str, float] = field(default_factory=dict)

    def ready(self, kind: str) -> bool:
        now = self.clock()
        if kind in self.last and now - self.last[kind] < self.period:
            return False
        self.last[kind] = now
        return True


class GravityTracker:
    """Chooses each frame's gravity-up (module docstring) and the log line that goes with it.

    ``config``: the estimate's settings; ``up``: the explicit up (3,) (cloud frame), or None to estimate it;
    ``max_tilt_deg``: the segmentation's largest support-plane tilt from up (``segmentation.plane_max_tilt_deg``),
    beyond which an explicit up is reported as disagreeing with the plane; ``throttle_s``: smallest interval
    between two repeated messages of one kind, seconds of ``clock``; ``up_name``: how messages name the
    up setting (``parameter 'up'`` in the node, ``--up`` in the CLI); ``node``: messages name the node's
    parameters (world_frame, gravity.*, segmentation.*); False for a program without them (the CLI). Not
    thread-safe (one worker calls it).
    """

    def __init__(self, config: GravityConfig, up: Sequence[float] | None, max_tilt_deg: float,
                 throttle_s: float = 5.0, up_name: str = "parameter 'up'", node: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        config.validate()
        self.config = config
        self.explicit = None if up is None else _unit(up, up_name)
        self.max_tilt_deg = float(max_tilt_deg)
        self.up_name = up_name
        self.node = node
        self._set_up = f"set {up_name} or world_frame" if node else f"set {up_name}"
        self._throttle = _Throttle(float(throttle_s), clock)
        self.current: np.ndarray | None = None  # the estimate in use
        self._reported: np.ndarray | None = None  # the estimate last written to the log
        self._plane_seen: bool | None = None  # whether the previous frame had a plane (None: no frame yet)

    def decide(self, xyz: np.ndarray, viewpoint, rng: np.random.Generator, world_up=None) -> UpDecision:
        """The up of one frame: xyz (N, 3) or (H, W, 3) cloud frame, metres; viewpoint (3,) camera centre,
        cloud frame; ``world_up``: (3,) the world frame's +z in the cloud frame when the cloud's pose in a
        z-up world frame is known (then nothing is estimated)."""
        if world_up is not None:
            return UpDecision(_unit(world_up, "world up"), "world_frame")
        if self.explicit is not None:
            est = estimate_up(xyz, viewpoint, self.config, rng, self.explicit)
            if est is None and angle_deg(self.explicit, DEFAULT_UP) > self.config.max_tilt_deg:
                # an up far from a level camera's (e.g. a z-up frame's [0, 0, 1] given for an optical frame)
                est = estimate_up(xyz, viewpoint, self.config, rng, DEFAULT_UP)
            return self._check_explicit(est)
        return self._estimated(estimate_up(xyz, viewpoint, self.config, rng, DEFAULT_UP))

    def without_points(self, world_up=None) -> UpDecision:
        """The up of a frame whose points are not at hand (nothing is estimated or logged): ``world_up``
        when given, else the explicit up, else the estimate in use, else :data:`DEFAULT_UP`."""
        if world_up is not None:
            return UpDecision(_unit(world_up, "world up"), "world_frame")
        if self.explicit is not None:
            return UpDecision(self.explicit.copy(), "parameter")
        if self.current is not None:
            return UpDecision(self.current.copy(), "estimated")
        return UpDecision(np.asarray(DEFAULT_UP, np.float64), "default")

    def _say(self, kind: str, decision: UpDecision, message: str, level: LogLevel = "info",
             throttled: bool = True) -> UpDecision:
        if throttled and not self._throttle.ready(kind):
            return decision
        return UpDecision(decision.up, decision.source, message, level, decision.estimate)

    def _no_plane_text(self, prior) -> str:
        c = self.config
        tilt = f"gravity.max_tilt_deg = {c.max_tilt_deg:g}" if self.node else f"{c.max_tilt_deg:g}"
        return (f"no support plane in view (none holding {c.min_plane_fraction:.0%} of the points, "
                f"{c.min_plane_width:g} m wide, facing the camera, with its normal within {tilt} deg of "
                f"{format_up(prior)})")

    def _check_explicit(self, est: UpEstimate | None) -> UpDecision:
        up = self.explicit
        decision = UpDecision(up.copy(), "parameter", estimate=est)
        was_seen, self._plane_seen = self._plane_seen, est is not None
        if est is None:  # said at the first frame and whenever the plane goes out of view (rate-limited)
            if was_seen is False:
                return decision
            return self._say("no_plane", decision, f"gravity-up: {self._no_plane_text(up)} to check "
                             f"{self.up_name} = {format_up(up)} against; using it as set")
        off = angle_deg(est.up, up)
        if off <= self.max_tilt_deg:
            return decision
        limit = (f"segmentation.plane_max_tilt_deg = {self.max_tilt_deg:g}: the table is not found and objects are "
                 f"reconstructed tilted" if self.node else f"{self.max_tilt_deg:g} deg: the object is reconstructed "
                 f"tilted")
        return self._say("disagree", decision, (
            f"gravity-up: {self.up_name} = {format_up(up)} is {off:.1f} deg from the normal of the support plane in "
            f"view ({est.inlier_fraction:.0%} of the points), more than {limit}; set {self.up_name} to "
            f"{format_up(est.up)} (the plane's normal), or leave it unset to estimate it"), "warning")

    def _estimated(self, est: UpEstimate | None) -> UpDecision:
        c = self.config
        if est is None:
            if self.current is None:
                d = UpDecision(np.asarray(DEFAULT_UP, np.float64), "default")
                return self._say("default", d, (
                    f"gravity-up: {self._no_plane_text(DEFAULT_UP)}: using a level camera's up "
                    f"{format_up(DEFAULT_UP)}; if the camera is tilted, {self._set_up} (gravity-up in the cloud "
                    f"frame)"), "warning")
            d = UpDecision(self.current.copy(), "estimated")
            was_seen, self._plane_seen = self._plane_seen, False
            if was_seen:
                return self._say("lost", d, f"gravity-up: {self._no_plane_text(DEFAULT_UP)}: keeping the last "
                                 f"estimate {format_up(self.current)}")
            return d
        self._plane_seen = True
        first = self.current is None
        if first or angle_deg(est.up, self.current) > c.hold_deg:
            self.current = est.up.copy()
        d = UpDecision(self.current.copy(), "estimated", estimate=est)
        where = (f"{format_up(self.current)} from the support plane in view ({est.inlier_fraction:.0%} of the "
                 f"points), {angle_deg(self.current, DEFAULT_UP):.1f} deg from a level camera's "
                 f"{format_up(DEFAULT_UP)}")
        if first:
            self._reported = self.current.copy()
            return self._say("first", d, f"gravity-up estimated: {where}; {self._set_up} to fix it instead",
                             throttled=False)
        moved = angle_deg(self.current, self._reported)
        if moved > c.report_deg:
            said = self._say("moved", d, f"gravity-up estimate moved by {moved:.1f} deg: now {where}")
            if said.message is not None:
                self._reported = self.current.copy()
            return said
        return d
