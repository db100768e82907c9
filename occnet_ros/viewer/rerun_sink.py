"""Logging the viewer's arrays to Rerun, served to a web browser from this process: Rerun's gRPC data server
(``grpc_port``) and the web viewer page that ships inside the ``rerun-sdk`` wheel (``web_port``). Nothing is
downloaded at run time.

Entities (all under ``scene``, the fixed frame, with its axes set by ``ViewCoordinates``): ``scene/cloud``
(the subsampled input cloud, under a ``Transform3D`` that places its frame), ``scene/objects/<id>`` (each
object's mesh) with ``scene/objects/<id>/box`` (its labelled bounding box), ``scene/query_points``
(the newest query coloured by probability). Everything is logged on the ``ros_time`` timeline at the
message's stamp; the server keeps at most ``memory_limit`` of it, oldest dropped first.
"""
from __future__ import annotations

import urllib.parse

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from occnet_ros.viewer.config import ViewerConfig
from occnet_ros.viewer.objects_cdr import ObjectView
from occnet_ros.viewer.scene import StampedPose, mesh_colors, object_color, probability_colors

APPLICATION_ID = "occnet_viewer"
TIMELINE = "ros_time"


class ViewerStartError(RuntimeError):
    """The servers could not start (e.g. a port in use); the message names the parameter."""


def page_url(host: str, web_port: int, grpc_port: int) -> str:
    """The address that opens the web viewer connected to the data server."""
    data = f"rerun+http://{host}:{grpc_port}/proxy"
    return f"http://{host}:{web_port}/?url={urllib.parse.quote(data, safe='')}"


def axes_for(frame: str, axes: str) -> str:
    """The ViewCoordinates name of the fixed frame: ``axes`` itself, or for ``auto`` REP 103's convention:
    RDF (x right, y down, z forward) for a frame named ``*_optical_frame`` / ``*_optical``, else FLU."""
    if axes != "auto":
        return axes
    return "RDF" if frame.endswith(("_optical_frame", "_optical")) else "FLU"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class RerunSink:
    """Starts the servers at construction (raises :class:`ViewerStartError`); ``url`` is the page address."""

    def __init__(self, config: ViewerConfig):
        self.config = config
        for name in ("grpc_port", "web_port"):  # Rerun's servers report a taken port only in their own log
            if not _port_free(getattr(config, name)):
                raise ViewerStartError(f"parameter '{name}': port {getattr(config, name)} is in use "
                                       "(another viewer running?); choose another port")
        self.rec = rr.RecordingStream(APPLICATION_ID)
        blueprint = rrb.Blueprint(rrb.Spatial3DView(origin="scene", name="occnet_ros"), collapse_panels=True)
        try:
            data_url = self.rec.serve_grpc(grpc_port=config.grpc_port, default_blueprint=blueprint,
                                           server_memory_limit=config.memory_limit)
            rr.serve_web_viewer(web_port=config.web_port, open_browser=False, connect_to=data_url)
        except Exception as e:  # rerun raises plain RuntimeError/ValueError from its Rust side
            raise ViewerStartError(f"the Rerun servers did not start (grpc_port {config.grpc_port}, web_port "
                                   f"{config.web_port}, memory_limit {config.memory_limit!r}): {e}") from e
        self.url = page_url(config.host, config.web_port, config.grpc_port)
        self.frame: str | None = None
        # the recording exists from the start, so a page that opens before any data shows the (empty) 3D view
        self.rec.log("scene", getattr(rr.ViewCoordinates, axes_for("", config.axes)), static=True)
        self._shown_ids: set[int] = set()
        self.logged = {"clouds": 0, "objects": 0, "queries": 0}

    def set_frame(self, frame: str) -> None:
        """Fix the view's frame (once); its axes from the ``axes`` parameter (:func:`axes_for`)."""
        self.frame = frame
        coords = getattr(rr.ViewCoordinates, axes_for(frame, self.config.axes))
        self.rec.log("scene", coords, static=True)

    def _time(self, stamp: float) -> None:
        self.rec.set_time(TIMELINE, timestamp=float(stamp))

    def log_cloud(self, stamp: float, points: np.ndarray, colors: np.ndarray | None,
                  pose: StampedPose | None) -> None:
        """(M, 3) points in the cloud's frame, (M, 3) uint8 colours or None; ``pose``: that frame in the fixed
        frame, None when it is the fixed frame."""
        self._time(stamp)
        if pose is None:
            self.rec.log("scene/cloud", rr.Transform3D(translation=[0.0, 0.0, 0.0], quaternion=[0.0, 0.0, 0.0, 1.0]))
        else:
            self.rec.log("scene/cloud", rr.Transform3D(translation=pose.translation, quaternion=pose.quaternion))
        self.rec.log("scene/cloud", rr.Points3D(points, colors=colors if colors is not None else [150, 150, 150],
                                                radii=self.config.point_radius))
        self.logged["clouds"] += 1

    def log_objects(self, stamp: float, objects: list[ObjectView]) -> None:
        """Every object's mesh and box (in the fixed frame); objects no longer present are cleared."""
        self._time(stamp)
        ids = set()
        for o in objects:
            path = f"scene/objects/{o.object_id}"
            ids.add(o.object_id)
            if o.faces.shape[0] == 0:
                self.rec.log(path, rr.Clear(recursive=False))
            else:
                self.rec.log(path, rr.Mesh3D(vertex_positions=o.vertices, triangle_indices=o.faces,
                                             vertex_colors=mesh_colors(o)))
            self.rec.log(path + "/box", rr.Boxes3D(centers=[o.bbox_center], sizes=[o.bbox_size],
                                                   quaternions=[o.bbox_quaternion], colors=[object_color(o.object_id)],
                                                   labels=[f"{o.label} ({o.num_views} view{'s' * (o.num_views != 1)})"],
                                                   fill_mode=rr.components.FillMode.MajorWireframe))
        for gone in self._shown_ids - ids:
            self.rec.log(f"scene/objects/{gone}", rr.Clear(recursive=True))
        self._shown_ids = ids
        self.logged["objects"] += 1

    def log_query(self, stamp: float, points: np.ndarray, probabilities: np.ndarray) -> None:
        """(N, 3) query points in the fixed frame with their (N,) probabilities."""
        self._time(stamp)
        self.rec.log("scene/query_points", rr.Points3D(points, colors=probability_colors(probabilities),
                                                       radii=self.config.query_radius))
        self.logged["queries"] += 1

    def close(self) -> None:
        self.rec.flush()
        self.rec.disconnect()
