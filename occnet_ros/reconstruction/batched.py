"""The occupancy fields of several objects evaluated together (pure Python, no ROS): the batched form of
:meth:`OccupancyField.probabilities <occnet_ros.reconstruction.occupancy_field.OccupancyField.probabilities>` that
:meth:`Reconstructor.reconstruct_many <occnet_ros.reconstruction.reconstructor.Reconstructor.reconstruct_many>` uses for
the MISE levels of a frame's objects.

Every field's points go through the same steps as in ``probabilities`` (the known-empty test first, then the
mean over the canonical frames whose padded box holds the point); the network calls of all fields are then
made together: each (code, points) job is cut into rows of :data:`ROW` points (the last one padded), and rows
of different objects go through the decoder side by side, each with its own feature planes
(``grid_sample`` takes one plane set per batch row). Global-code networks and mirrored decodings have no
batched form here and are decoded job by job, exactly as ``probabilities`` does.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from occnet_ros.geometry import all_columns
from occnet_ros.network.model_local import PreparedPlanes
from occnet_ros.reconstruction.compute_pool import ComputePool, split_range
from occnet_ros.reconstruction.normalization import BOX_HALF
from occnet_ros.reconstruction.occupancy_field import OccupancyField

__all__ = ["probabilities_many", "decode_jobs", "ROW"]

ROW = 1024
"""Points per decoder row of a batched call; ``batch_size // ROW`` rows (at least one) per call."""


def _batchable(fields: Sequence[OccupancyField]) -> bool:
    if not fields:
        return False
    model = fields[0].model
    return all(f.model is model and c.mirror_prepared is None and isinstance(c.prepared, PreparedPlanes)
               and c.prepared.code.shape[0] == 1 and c.prepared.dtype == fields[0].codes[0].prepared.dtype
               for f in fields for c in f.codes)


def decode_jobs(fields: Sequence[OccupancyField], jobs: list[tuple[int, int, np.ndarray]],
                pool: ComputePool | None = None) -> list[np.ndarray]:
    """Network probabilities of several jobs: (field index, code index within that field, points (M, 3) float32
    canonical in that code's frame) -> one (M,) float32 array per job, as the field's own decoding gives them
    (up to float rounding). pool: threads that decode parts of the rows at once (CPU; None = the calling
    thread)."""
    if not jobs:
        return []
    if not _batchable(fields):
        return [fields[i]._decode(p, fields[i].codes[c].prepared, fields[i].codes[c].mirror_prepared, pool)
                for i, c, p in jobs]
    model = fields[0].model
    first = fields[0].codes[0].prepared
    dev = first.code.device
    keys = sorted({(i, c) for i, c, _ in jobs})
    slot = {k: n for n, k in enumerate(keys)}
    planes = torch.cat([fields[i].codes[c].prepared.code for i, c in keys])  # (J, 3, C, R, R)
    rows, row_code, sizes = [], [], []
    for i, c, p in jobs:
        m = p.shape[0]
        sizes.append(m)
        if m == 0:
            continue
        pad = (-m) % ROW
        q = np.concatenate([p, np.repeat(p[:1], pad, axis=0)]) if pad else p
        rows.append(q.reshape(-1, ROW, 3))
        row_code += [slot[(i, c)]] * (q.shape[0] // ROW)
    out_rows = np.empty((len(row_code), ROW), np.float32)
    if row_code:
        per_call = max(1, fields[0].batch_size // ROW)
        src = torch.from_numpy(np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)).to(dev)
        index = torch.tensor(row_code, device=dev)
        dst = torch.empty(len(row_code), ROW, dtype=torch.float32, device=dev)

        def decode_rows(a: int, b: int) -> None:
            with torch.inference_mode():
                for s in range(a, b, per_call):
                    e = min(b, s + per_call)
                    prep = PreparedPlanes(code=planes.index_select(0, index[s:e]), dtype=first.dtype,
                                          fc_c_weight=first.fc_c_weight, fc_c_bias=first.fc_c_bias)
                    dst[s:e] = model.decode_prepared(src[s:e], prep).sigmoid_()

        threads = pool.threads if pool is not None and dev.type == "cpu" else 1
        parts = split_range(len(row_code), threads, per_call)
        if threads > 1:
            pool.run([lambda a=a, b=b: decode_rows(a, b) for a, b in parts])
        else:
            decode_rows(0, len(row_code))
        out_rows[:] = dst.cpu().numpy() if dev.type != "cpu" else dst.numpy()
    out, at = [], 0
    flat = out_rows.reshape(-1)
    for m in sizes:
        if m == 0:
            out.append(np.zeros(0, np.float32))
            continue
        n_rows = -(-m // ROW)
        out.append(flat[at * ROW:at * ROW + m].copy())
        at += n_rows
    return out


def probabilities_many(fields: Sequence[OccupancyField], points: Sequence[np.ndarray],
                       pool: ComputePool | None = None) -> list[np.ndarray]:
    """``fields[i].probabilities(points[i])`` for every i (points (M_i, 3) canonical of that field's own frame)
    -> list of (M_i,) float32, with the network calls of all fields made together (:func:`decode_jobs`, on
    ``pool``'s threads)."""
    if len(fields) != len(points):
        raise ValueError(f"{len(fields)} fields but {len(points)} point sets")
    plans = []
    jobs: list[tuple[int, int, np.ndarray]] = []
    for i, (f, pts) in enumerate(zip(fields, points)):
        p = np.ascontiguousarray(pts, dtype=np.float32).reshape(-1, 3)
        keep = (np.arange(p.shape[0]) if f.known_empty is None
                else np.flatnonzero(~f.known_empty.mask(f.frame.from_canonical(p))))
        q = p[keep]
        parts = [(len(jobs), np.arange(q.shape[0]))]
        jobs.append((i, 0, q))
        if len(f.codes) > 1 and q.shape[0]:
            source = f.codes[0].frame.from_canonical(q)
            for c in range(1, len(f.codes)):
                r = f.codes[c].frame.to_canonical(source).astype(np.float32)
                inside = np.flatnonzero(all_columns(np.abs(r) <= BOX_HALF))
                if inside.size:
                    parts.append((len(jobs), inside))
                    jobs.append((i, c, r[inside]))
        plans.append((p.shape[0], keep, parts))
    decoded = decode_jobs(fields, jobs, pool)
    out = []
    for n, keep, parts in plans:
        total = np.zeros(keep.shape[0], np.float64)
        count = np.zeros(keep.shape[0], np.float64)
        for job, idx in parts:
            total[idx] += decoded[job]
            count[idx] += 1.0
        res = np.zeros(n, np.float32)
        res[keep] = (total / np.maximum(count, 1.0)).astype(np.float32)
        out.append(res)
    return out
