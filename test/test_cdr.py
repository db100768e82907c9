"""The node's outgoing messages written as CDR bytes from numpy (occnet_ros.ros.cdr, object_msgs, markers)
against rclpy's own serializer: the message objects built the old way (one Point / MeshTriangle / ColorRGBA
per vertex, face and colour, kept here as the slow reference) through rclpy.serialization.serialize_message,
byte for byte. rclpy leaves its padding bytes as it found them in its buffer; the padding positions are
found by walking the reference bytes with the message definitions (independent of the writer), and there
the writer's bytes must be zeros. Random data with fixed seeds."""
import importlib
import re
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import ColorRGBA, Header  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from occnet_ros.msg import ReconstructedObject, ReconstructedObjectArray  # noqa: E402
from occnet_ros.perception.processed_frame import ProcessedObject  # noqa: E402
from occnet_ros.perception.segmentation import Segment  # noqa: E402
from occnet_ros.reconstruction.normalization import CanonicalFrame  # noqa: E402
from occnet_ros.ros import cdr  # noqa: E402
from occnet_ros.ros.conversions import colors_to_msgs, mesh_to_msg, points_to_msgs, pose_from_rt, vector3  # noqa: E402
from occnet_ros.ros.markers import NAMESPACE, MeshView, id_color, marker_array, marker_id  # noqa: E402
from occnet_ros.ros.object_msgs import (ObjectMessageCache, frame_messages, mesh_arrays, object_array,  # noqa: E402
                                        oriented_box)

# ---------------------------------------------------------------- the slow reference (message objects)


def ref_object(result, header):
    frame = result.obj.frame
    verts, faces = mesh_arrays(result)
    msg = ReconstructedObject(header=header, id=int(result.segment.id) & 0xFFFFFFFF, label=result.segment.label)
    axes = np.asarray(frame.rotation, np.float64)
    msg.pose = pose_from_rt(axes.T, frame.center)
    msg.scale = float(frame.scale)
    msg.mesh = mesh_to_msg(verts, faces)
    if result.vertex_colors is not None and len(result.vertex_colors) == len(verts):
        msg.vertex_colors = colors_to_msgs(result.vertex_colors)
    centre, size = oriented_box(verts if len(faces) else result.segment.points, axes)
    msg.bbox_pose = pose_from_rt(axes.T, centre)
    msg.bbox_size = vector3(size)
    msg.num_observed_points = int(result.n_observed)
    msg.num_views = int(result.n_views)
    msg.reconstruction_time = float(result.seconds)
    return msg


def ref_objects(results, header):
    return ReconstructedObjectArray(header=header, objects=[ref_object(r, header) for r in results])


def ref_markers(views, previous_ids, header, alpha=1.0, unchanged=frozenset()):
    shown = {v.object_id for v in views if len(v.faces)}
    resend = shown - (set(unchanged) & set(previous_ids))
    out = []
    for v in (v for v in views if v.object_id in resend):
        m = Marker(header=header, ns=NAMESPACE, id=marker_id(v.object_id), type=Marker.TRIANGLE_LIST,
                   action=Marker.ADD)
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = 1.0
        r, g, b = id_color(v.object_id)
        m.color = ColorRGBA(r=r, g=g, b=b, a=float(alpha))
        corners = np.asarray(v.faces, np.int64).reshape(-1).tolist()
        points = points_to_msgs(np.asarray(v.vertices).reshape(-1, 3))
        m.points = [points[i] for i in corners]
        if v.colors is not None:
            colors = colors_to_msgs(np.asarray(v.colors).reshape(-1, 3), alpha)
            m.colors = [colors[i] for i in corners]
        out.append(m)
    out += [Marker(header=header, ns=NAMESPACE, id=marker_id(i), action=Marker.DELETE)
            for i in sorted(set(previous_ids) - shown)]
    return MarkerArray(markers=out), shown


# ---------------------------------------------------------------- padding positions of CDR bytes

SIZES = {"boolean": 1, "octet": 1, "uint8": 1, "int8": 1, "char": 1, "int16": 2, "uint16": 2, "int32": 4,
         "uint32": 4, "float": 4, "int64": 8, "uint64": 8, "double": 8}


def msg_class(name):
    pkg, typ = name.split("/")
    return getattr(importlib.import_module(pkg + ".msg"), typ)


def flat_layout(t):
    """(size, alignment) of a type made of primitives only, packed without padding; None otherwise."""
    if t in SIZES:
        return SIZES[t], SIZES[t]
    m = re.fullmatch(r"(.+)\[(\d+)\]", t)
    if m:
        inner = flat_layout(m.group(1))
        return None if inner is None else (inner[0] * int(m.group(2)), inner[1])
    if "/" not in t or t.startswith("sequence<"):
        return None
    size, align = 0, 1
    for ft in msg_class(t).get_fields_and_field_types().values():
        f = flat_layout(ft)
        if f is None or size % f[1]:
            return None
        size, align = size + f[0], max(align, f[1])
    return (size, align) if size % align == 0 else None


def padding_positions(data, msg_type):
    """Indices of the padding bytes of ``data`` (a CDR message of ``msg_type``), from its definition."""
    pad, pos = [], [4]

    def align(n):
        k = -(pos[0] - 4) % n
        pad.extend(range(pos[0], pos[0] + k))
        pos[0] += k

    def u32():
        align(4)
        n = int.from_bytes(data[pos[0]:pos[0] + 4], "little")
        pos[0] += 4
        return n

    def walk(t, count=1):
        flat = flat_layout(t)
        if flat is not None:
            if count:
                align(flat[1])
                pos[0] += flat[0] * count
            return
        for _ in range(count):
            if t == "string":
                n = u32()
                pos[0] += n
            elif t.startswith("sequence<"):
                walk(t[len("sequence<"):-1], u32())
            elif re.fullmatch(r"(.+)\[(\d+)\]", t):
                inner, k = re.fullmatch(r"(.+)\[(\d+)\]", t).groups()
                walk(inner, int(k))
            else:
                for ft in msg_class(t).get_fields_and_field_types().values():
                    walk(ft)

    for ft in msg_type.get_fields_and_field_types().values():
        walk(ft)
    assert pos[0] == len(data), "the walk does not end at the end of the message"
    return np.asarray(pad, np.int64)


def assert_same_cdr(ours, msg):
    """``ours`` equals serialize_message(msg) byte for byte, padding (zeros in ours) excepted, and reads back
    as the same values."""
    ref = serialize_message(msg)
    assert isinstance(ours, bytes) and len(ours) == len(ref)
    a, b = np.frombuffer(ours, np.uint8), np.frombuffer(ref, np.uint8).copy()
    pad = padding_positions(ref, type(msg))
    assert not a[pad].any(), "padding bytes must be zeros"
    b[pad] = 0
    diff = np.flatnonzero(a != b)
    assert diff.size == 0, f"{diff.size} bytes differ, first at {diff[:8].tolist()}"
    assert deserialize_message(ours, type(msg)) == deserialize_message(ref, type(msg))
    return ref


# ---------------------------------------------------------------- test data


def header(frame_id="cam", sec=1_700_000_123, nanosec=987_654_321):
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def result(rng, object_id=3, label="mask_3", n_vertices=40, n_faces=70, colors=True, mesh="simplified",
           n_views=1):
    """A ProcessedObject of random data: ``mesh`` "simplified" (vertices/faces set), "obj" (only obj.mesh)
    or "none" (no mesh at all)."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    frame = CanonicalFrame(rotation=q * np.sign(np.linalg.det(q)), center=rng.normal(size=3), scale=0.1 + rng.random())
    verts = rng.normal(size=(n_vertices, 3))
    faces = rng.integers(0, max(n_vertices, 1), size=(n_faces, 3)) if n_faces else np.zeros((0, 3), np.int64)
    obj = SimpleNamespace(frame=frame, mesh=SimpleNamespace(vertices=verts, faces=faces) if mesh == "obj" else None)
    seg = Segment(object_id, label, rng.normal(size=(25, 3)).astype(np.float32))
    rgb = rng.integers(0, 256, size=(n_vertices, 3), dtype=np.uint8) if colors else None
    simplified = mesh == "simplified"
    return ProcessedObject(seg, obj, int(rng.integers(1, 10**6)), rgb, float(rng.random()),
                           verts if simplified else None, faces if simplified else None, n_views)


def views(results):
    return [MeshView(int(r.segment.id), *mesh_arrays(r), r.vertex_colors) for r in results]


# ---------------------------------------------------------------- tests


def test_headers_and_strings_of_every_length_match_rclpy():
    for n in range(10):
        w = cdr.CdrWriter()
        cdr.write_header(w, header("f" * n))
        assert w.getvalue() == serialize_message(header("f" * n))  # no padding at all
    w = cdr.CdrWriter()
    cdr.write_header(w, header("é"))  # UTF-8 bytes, counted with the NUL
    assert w.getvalue()[12:] == b"\x03\x00\x00\x00\xc3\xa9\x00" and w.getvalue() == serialize_message(header("é"))


def test_empty_arrays():
    h = header("")
    assert_same_cdr(object_array([], h), ref_objects([], h))
    arr, shown = marker_array([], set(), h)
    assert shown == set()
    assert_same_cdr(arr, ref_markers([], set(), h)[0])


def test_one_object_with_colours():
    rng = np.random.default_rng(0)
    r = result(rng, n_vertices=500, n_faces=900)
    h = header()
    ours = object_array([r], h)
    assert_same_cdr(ours, ref_objects([r], h))
    o = deserialize_message(ours, ReconstructedObjectArray).objects[0]  # read back: the arrays as given
    np.testing.assert_array_equal([[p.x, p.y, p.z] for p in o.mesh.vertices], r.vertices)
    np.testing.assert_array_equal([t.vertex_indices for t in o.mesh.triangles], r.faces)
    np.testing.assert_allclose([[c.r, c.g, c.b, c.a] for c in o.vertex_colors],
                               np.c_[r.vertex_colors / 255.0, np.ones(500)], atol=1e-7)
    assert (o.id, o.label, o.num_views, o.num_observed_points) == (3, "mask_3", 1, r.n_observed)


def test_every_alignment_of_labels_and_frame_ids():
    """Labels and frame ids of 0..9 characters move every field after them through each offset mod 8."""
    rng = np.random.default_rng(1)
    for n_frame in range(10):
        h = header("c" * n_frame)
        rs = [result(rng, object_id=i, label="l" * ((n_frame + i) % 10), n_vertices=5 + i, n_faces=(3 + i) % 5,
                      colors=bool(i % 2)) for i in range(10)]
        assert_same_cdr(object_array(rs, h), ref_objects(rs, h))
        arr, _ = marker_array(views(rs), {100, 7}, h, alpha=0.25)
        assert_same_cdr(arr, ref_markers(views(rs), {100, 7}, h, alpha=0.25)[0])


def test_several_objects_with_and_without_colours_and_meshes():
    rng = np.random.default_rng(2)
    rs = [result(rng, object_id=-5 & 0xFFFFFFFF, label="mask_-5"),
          result(rng, object_id=2**32 - 1, label="cluster_12", colors=False, n_views=4),
          result(rng, object_id=7, label="mask_7", mesh="obj"),
          result(rng, object_id=8, label="mask_8", n_faces=0),  # no faces: box from the observed points
          result(rng, object_id=9, label="mask_9", mesh="none", colors=False),
          result(rng, object_id=10, label="", n_vertices=0, n_faces=0)]
    rs.append(result(rng, object_id=11, label="mask_11"))
    rs[-1].vertex_colors = rs[-1].vertex_colors[:-1]  # not one per vertex: no colours in the object message
    h = header("camera_color_optical_frame")
    out = object_array(rs, h)
    assert_same_cdr(out, ref_objects(rs, h))
    back = deserialize_message(out, ReconstructedObjectArray).objects
    assert [o.id for o in back] == [2**32 - 5, 2**32 - 1, 7, 8, 9, 10, 11]
    assert [len(o.vertex_colors) for o in back] == [40, 0, 40, 40, 0, 0, 0]


def test_markers_with_deletes_alpha_and_unchanged_objects():
    rng = np.random.default_rng(3)
    rs = [result(rng, object_id=1), result(rng, object_id=2, colors=False), result(rng, object_id=3, n_faces=0),
          result(rng, object_id=2**31, label="big"), result(rng, object_id=5)]
    h = header("map")
    for previous, unchanged in [(set(), set()), ({2, 3, 9, 4}, set()), ({1, 5, 2**31, 40}, {1, 2})]:
        ours, shown = marker_array(views(rs), previous, h, 0.5, unchanged)
        ref, ref_shown = ref_markers(views(rs), previous, h, 0.5, unchanged)
        assert shown == ref_shown == {1, 2, 5, 2**31}
        assert_same_cdr(ours, ref)
    ids = [(m.id, m.action) for m in deserialize_message(ours, MarkerArray).markers]
    assert ids == [(2, Marker.ADD), (-(2**31), Marker.ADD), (5, Marker.ADD), (40, Marker.DELETE)]


def test_frame_messages_match_the_reference_and_the_cache_holds_at_any_offset():
    """Cached object bodies re-emitted after headers of other lengths (so at other offsets mod 8) give the
    same bytes as encoding afresh and as the reference."""
    rng = np.random.default_rng(4)
    rs = [result(rng, object_id=i, label="mask_" + "x" * i, n_vertices=30 + i) for i in range(4)]
    cache = ObjectMessageCache()
    for frame_id in ["", "w", "wor", "world", "world_frame"]:
        h = header(frame_id)
        out = frame_messages(rs, h, {1, 99}, True, 0.75, {1}, cache=cache)
        assert out.objects == frame_messages(rs, h, {1, 99}, True, 0.75, {1}).objects
        assert_same_cdr(out.objects, ref_objects(rs, h))
        ref, shown = ref_markers(views(rs), {1, 99}, h, 0.75, {1})
        assert_same_cdr(out.markers, ref)
        assert out.marker_ids == shown == {0, 1, 2, 3}
        rs = rs[1:] + rs[:1]  # another order: other offsets again


def test_fragment_chunks_refuse_fields_aligned_beyond_the_chunk():
    w = cdr.FragmentWriter()
    w.chunk(4)
    w.u32(1)
    with pytest.raises(ValueError, match="8-byte field in a chunk aligned to 4"):
        w.f64(1.0)
    with pytest.raises(ValueError, match="face indices"):
        bad = result(np.random.default_rng(5))
        bad.faces = bad.faces + 100
        object_array([bad], header())


def test_big_arrays_go_in_pieces_and_publish_as_bytes(monkeypatch):
    """Arrays larger than a piece (cdr.PIECE_BYTES, made small here) encode the same; the result is plain
    bytes, what a publisher sends as they are."""
    monkeypatch.setattr(cdr, "PIECE_BYTES", 1000)
    rng = np.random.default_rng(6)
    rs = [result(rng, n_vertices=500, n_faces=900), result(rng, n_vertices=300, n_faces=0)]
    h = header("cam")
    out = frame_messages(rs, h, set(), True)
    assert type(out.objects) is bytes and type(out.markers) is bytes
    assert_same_cdr(out.objects, ref_objects(rs, h))
    assert_same_cdr(out.markers, ref_markers(views(rs), set(), h)[0])
