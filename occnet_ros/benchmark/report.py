"""The speed targets checked against measured results (PASS/MISS, never asserted), and the outputs:
``results.json`` (everything measured) and ``results.md`` (the tables), both under the output folder.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from occnet_ros.benchmark.node_throughput import UNDER_LOAD_HZ, UNDER_LOAD_MIN_FRAMES


@dataclass(frozen=True)
class Target:
    """``name``; ``unit``; ``limit``; ``higher_is_better``; ``get(results) -> measured value`` (None or
    NaN = not measured); ``what`` says which measurement is compared."""

    name: str
    unit: str
    limit: float
    higher_is_better: bool
    get: Callable[[dict], float | None]
    what: str


def _dig(d: Any, *keys) -> Any:
    for k in keys:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return None
    return d


def _size_row(rows: list | None, key: str, value: int) -> dict | None:
    for r in rows or []:
        if r.get(key) == value:
            return r
    return max(rows, key=lambda r: r.get(key, 0)) if rows else None


def _latency_row(res: dict, coarse: bool = False) -> dict | None:
    """The 5k-point row (or the largest) at the latency section's finest resolution, or (``coarse``) at the
    resolution one MISE step below it."""
    rows = _dig(res, "latency", "sizes") or []
    levels = sorted({r.get("resolution", 0) for r in rows}, reverse=True)
    if len(levels) < 1 + coarse:
        return None
    return _size_row([r for r in rows if r.get("resolution", 0) == levels[int(coarse)]], "cloud_points", 5000)


def _under_load(res: dict, key: str) -> float | None:
    """``key`` of the service-under-load summary when every run overlapped a reconstruction, else None."""
    u = _dig(res, "ros", "service_under_load")
    if not isinstance(u, dict) or (u.get("frames_reconstructed_meanwhile") or 0) < 1:
        return None
    return u.get(key)


def _query_row(res: dict) -> dict | None:
    return _size_row(_dig(res, "queries", "sizes"), "points", 100_000)


TARGETS = (
    Target("object_128_total_s", "s", 0.5, False,
           lambda r: _dig(_latency_row(r), "stages", "total", "median_s"),
           "one object as the node processes it, everything from the mask crop to the serialized messages "
           "(known-empty, encode, MISE, marching cubes, simplification to mesh.max_faces, anchoring, colours, "
           "messages), median, 5k-point cloud, the benchmark's resolution (128^3 in a full run)"),
    Target("object_64_total_s", "s", 0.15, False,
           lambda r: _dig(_latency_row(r, coarse=True), "stages", "total", "median_s"),
           "the same one MISE step coarser (64^3 in a full run: the node's shipped resolution)"),
    Target("mise_fewer_evaluations", "x", 10.0, True,
           lambda r: _dig(r, "mise_vs_dense", "eval_ratio_dense_over_mise"),
           "dense-grid / MISE network evaluations at the same final resolution"),
    Target("mise_vs_dense_iou", "", 0.99, True, lambda r: _dig(r, "mise_vs_dense", "mesh_iou"),
           "volumetric IoU of the MISE and dense meshes"),
    Target("query_spread_points_per_s", "pts/s", 1e6, True,
           lambda r: _dig(_query_row(r), "store_spread", "points_per_s"),
           "object store, points spread over the scene, 100k per request (or the largest)"),
    Target("query_inside_points_per_s", "pts/s", 2e5, True,
           lambda r: _dig(_query_row(r), "object_exact_inside", "points_per_s"),
           "one object, exact network answers, points inside its box, 100k per request (or the largest)"),
    Target("service_10k_p50_under_load_s", "s", 0.020, False,
           lambda r: _under_load(r, "p50_s"),
           f"query_occupancy round trip from another process, 10k points at {UNDER_LOAD_HZ:g} calls/s, while frames "
           "are reconstructed (not measured unless a frame finished during the calls)"),
    Target("service_10k_p99_under_load_s", "s", 0.020, False,
           lambda r: _under_load(r, "p99_s"),
           f"the same calls: the worst p99 of the runs (each run at least latency_calls calls and on until "
           f"{UNDER_LOAD_MIN_FRAMES} frames were reconstructed in it; not measured where none was)"),
    Target("service_10k_max_under_load_s", "s", 0.100, False,
           lambda r: _under_load(r, "max_s"),
           "the same calls: the longest call of all runs"),
    Target("map_static_frames_per_s", "frames/s", 2.0, True,
           lambda r: _dig(r, "map", "converged", "frames_per_s"),
           "the node as an object mapper on a static 640x480 scene of 4 objects once every object has its mesh: "
           "objects messages per second (codes and meshes kept, only segmentation and association per frame)"),
)


def check_targets(results: dict) -> list[dict]:
    """Each target -> {name, limit, measured, status PASS/MISS/NOT MEASURED, what}."""
    rows = []
    for t in TARGETS:
        v = t.get(results)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            status, v = "NOT MEASURED", None
        else:
            ok = v >= t.limit if t.higher_is_better else v <= t.limit
            status = "PASS" if ok else "MISS"
        rows.append({"name": t.name, "limit": t.limit, "unit": t.unit, "direction": ">=" if t.higher_is_better
                     else "<=", "measured": v, "status": status, "what": t.what})
    return rows


def _children(memory: dict) -> str:
    """The node's child processes and their summed peak RSS, as a clause of the memory line ("" for results
    without them)."""
    if not memory.get("children"):
        return ""
    return f" (its {memory['children']} child processes: {_fmt(memory.get('children_peak_rss_mb'))} MiB, peaks summed)"


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if unit == "s":
            return f"{v * 1e3:.1f} ms" if v < 1.0 else f"{v:.2f} s"
        if abs(v) >= 1e5:
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def _ms(t: dict | None) -> str:
    return _fmt(_dig(t, "median_s"), "s")


def _frame_lines(fr: Any) -> list[str]:
    """The per-stage table of one node frame (section "frame")."""
    if not isinstance(fr, dict):
        return []
    if not fr.get("available", False):
        return ["", "## One node frame, stage by stage", "", f"- not measured: {fr.get('reason', fr.get('error'))}"]
    full, one = fr["frame"], fr["one_object"]
    threads = full.get("object_threads", 1)
    how = (f"the objects on {threads} compute threads at once (stage times, shares and floors: thread time, summed "
           f"over the objects; shares of {threads} x the frame)" if threads > 1 else "one object after the other")
    lines = ["", "## One node frame, stage by stage", "",
             f"- {fr['width']}x{fr['height']} tabletop, {full['objects']} objects (mask, image, camera_info), node "
             f"parameters {fr['node_params']} (MISE {fr['resolution']}^3), decimation {fr['decimation']}; medians",
             f"- frame, {how}: {_ms(full['stages']['total'])} ({_fmt(full['objects_per_s'])} objects/s); the first "
             f"object alone {_ms(one['stages']['total'])}: {full['objects']} objects cost {_fmt(fr['four_over_one'])}x "
             f"one",
             *([f"- the same frame with reconstruction.batch_objects on (shared network calls): "
                f"{_ms(fr['batched']['stages']['total'])}, {_fmt(fr['batched_over_one_by_one'])}x the frame above "
                f"(encode {_ms(fr['batched']['stages']['encode'])}, MISE {_ms(fr['batched']['stages']['mise'])}); "
                f"the node's batch_objects {'batches' if fr.get('node_batches') else 'does not batch'} here"]
               if "batched" in fr else []),
             "", "| stage | frame | share | floor | one object alone |", "|---|---|---|---|---|"]
    floors = full.get("floor", {})
    for k, share in full["share"].items():
        floor = _fmt(floors.get(k), "s") if k in floors else ""
        lines.append(f"| {k} | {_ms(full['stages'][k])} | {share * 100:.1f} % | {floor} | {_ms(one['stages'][k])} |")
    lines.append(f"| {'thread time' if threads > 1 else 'median frame'} minus the stages' medians "
                 f"| {_fmt(full['unaccounted_s'], 's')} | | | "
                 f"{_fmt(one['unaccounted_s'], 's')} |")
    return lines


def _floor_basis(floor: dict) -> str:
    """What the floors divide by: the measured matmul rates of the floor section."""
    f32 = _fmt(floor.get("matmul_float32", {}).get("gflops"))
    unet = floor.get("matmul_unet") or {}
    text = (f"floors = network FLOPs / measured matmul rate on that device: the decoder and the encoder's point MLP "
            f"at the float32 rate of the decoder's size, {f32} GFLOP/s")
    if unet:
        width = next(iter(unet.values())).get("hidden")
        rates = ", ".join(f"{k} {_fmt(r.get('gflops'))}" for k, r in unet.items())
        text += (f"; the encoder's U-Net at the rate of its widest layer ({width}) in the precision it runs in "
                 f"({rates} GFLOP/s)")
    return text


def markdown(results: dict) -> str:
    """The human-readable report."""
    m = results.get("machine", {})
    w = results.get("weights", {})
    lines = [f"# occnet_ros benchmark ({'quick' if results.get('quick') else 'full'} run)", "",
             *([f"- note: {results['note']}"] if results.get("note") else []),
             f"- machine: {m.get('cpu_model')}, {m.get('usable_cores')} usable cores, torch threads "
             f"{m.get('torch_threads')}, numpy BLAS threads {m.get('blas_threads', '?')}, load average at start "
             f"{m.get('loadavg_1_5_15')}; network on {m.get('device', 'cpu')}",
             f"- weights: {w.get('kind')} ({w.get('path')}), threshold {w.get('threshold')}",
             f"- medians over {results.get('repeats')} runs; {_floor_basis(results.get('floor', {}))}", ""]
    lines += ["## Targets", "", "| target | limit | measured | status | what |", "|---|---|---|---|---|"]
    for t in results.get("targets", []):
        unit = t["unit"] if t["unit"] != "s" else ""
        lines.append(f"| {t['name']} | {t['direction']} {_fmt(float(t['limit']), t['unit'])} {unit} "
                     f"| {_fmt(t['measured'], t['unit'])} | {t['status']} | {t['what']} |")
    f = results.get("floor")
    if isinstance(f, dict) and "decoder_by_chunk" in f:
        lines += ["", "## Floor: decoder rate by chunk size", "", "| chunk | points/s | floor points/s |",
                  "|---|---|---|"]
        for r in f["decoder_by_chunk"]:
            lines.append(f"| {r['chunk']} | {_fmt(r['points_per_s'])} | {_fmt(r['floor_points_per_s'])} |")
        if f.get("decoder_unfused_reference"):
            lines.append(f"| unfused reference ({f['decoder_unfused_reference']['chunk']}) | "
                         f"{_fmt(f['decoder_unfused_reference']['points_per_s'])} | |")
        lines.append(f"| bfloat16 ({f['decoder_bfloat16']['chunk']}) | {_fmt(f['decoder_bfloat16']['points_per_s'])} "
                     f"| max prob error {_fmt(f['bfloat16_error']['max_abs_prob_diff'])} |")
    mv = results.get("mise_vs_dense")
    if isinstance(mv, dict) and "mise" in mv:
        lines += ["", f"## MISE vs dense at {mv['resolution']}^3", "",
                  "| | evaluations | time | floor |", "|---|---|---|---|",
                  f"| MISE | {mv['mise']['n_evals']} {mv['mise']['evals_per_level']} | {_ms(mv['mise']['time'])} "
                  f"| {_fmt(mv['mise']['floor_s'], 's')} |",
                  f"| dense | {mv['dense']['n_evals']} | {_ms(mv['dense']['time'])} "
                  f"| {_fmt(mv['dense']['floor_s'], 's')} |",
                  "", f"- ratio of evaluations {_fmt(mv['eval_ratio_dense_over_mise'])}x, of time "
                  f"{_fmt(mv['time_ratio_dense_over_mise'])}x; mesh IoU {_fmt(mv['mesh_iou'])}; "
                  f"marching cubes {_ms(mv['marching_cubes']['time'])}"]
        if "coarser_start" in mv:
            cs = mv["coarser_start"]
            lines.append(f"- coarser start {cs['resolution0']}x2^{cs['upsampling_steps']}: {cs['n_evals']} evaluations "
                         f"{cs['evals_per_level']} ({_fmt(cs['eval_ratio_dense_over_mise'])}x fewer than dense), "
                         f"{_ms(cs['time'])}, mesh IoU vs dense {_fmt(cs['mesh_iou_vs_dense'])}")
        if "random_network_counts" in mv:
            rc = mv["random_network_counts"]
            lines.append(f"- random network of the same architecture: {rc['n_evals']} MISE evaluations "
                         f"({_fmt(rc['ratio_dense_over_mise'])}x fewer than dense)")
    lat = results.get("latency")
    if isinstance(lat, dict) and "sizes" in lat:
        stages = ["crop", "clean", "known_empty", "normalize", "encode", "mise", "marching_cubes", "simplify",
                  "anchor", "colour", "message", "total"]
        max_faces = lat.get("max_faces")
        lines += ["", "## Per-object latency (median)", "",
                  f"- node parameters: {lat.get('node_params')}; meshes simplified to mesh.max_faces "
                  f"{max_faces if max_faces else 'unlimited (0)'} (decimation {lat.get('decimation', 'in process')}); "
                  f"messages with markers"
                  + ("" if lat.get("messages_measured", True) else " (not measured: ROS packages missing)"), "",
                  "| grid | points | " + " | ".join(stages) + " | faces MC -> published | message bytes | MISE evals "
                  "| encode floor | MISE floor | longest GIL hold |", "|---" * (len(stages) + 8) + "|"]
        for r in lat["sizes"]:
            faces = f"{r.get('faces_marching_cubes')} -> {r.get('faces_published')}"
            if r.get("simplify_note"):
                faces += f" ({r['simplify_note']})"
            lines.append(f"| {r.get('resolution', lat.get('resolution'))}^3 | {r['cloud_points']} | " + " | ".join(_ms(r['stages'].get(k)) for k in stages)
                         + f" | {faces} | {r.get('message_bytes')} | {r['mise_n_evals']} "
                         f"| {_fmt(r['floor'].get('encode_s'), 's')} | {_fmt(r['floor']['mise_s'], 's')} "
                         f"| {_fmt(r.get('longest_gil_hold_s'), 's')} |")
    lines += _frame_lines(results.get("frame"))
    q = results.get("queries")
    if isinstance(q, dict) and "sizes" in q:
        lines += ["", "## Query throughput, Python API (points/s)", "",
                  "| points | object exact (inside) | floor | object grid | store spread | reaching network "
                  "| store inside one |", "|---|---|---|---|---|---|---|"]
        for r in q["sizes"]:
            lines.append(f"| {r['points']} | {_fmt(r['object_exact_inside']['points_per_s'])} | "
                         f"{_fmt(r['object_exact_inside']['floor_points_per_s'])} | "
                         f"{_fmt(r['object_grid_inside']['points_per_s'])} | "
                         f"{_fmt(r['store_spread']['points_per_s'])} | "
                         f"{r['store_spread']['points_reaching_network']} | "
                         f"{_fmt(r['store_inside_one']['points_per_s'])} |")
        g = q["grid_vs_exact"]
        lines.append(f"\ngrid vs exact: max |dp| {_fmt(g['max_abs_prob_diff'])}, mean {_fmt(g['mean_abs_prob_diff'])}, "
                     f"occupancy agreement {_fmt(g['occupancy_agreement'])} (near the surface "
                     f"{_fmt(g['occupancy_agreement_near_surface'])})")
    ros = results.get("ros")
    if isinstance(ros, dict):
        lines += ["", "## ROS node (separate process)", ""]
        if not ros.get("available", False):
            lines.append(f"not measured: {ros.get('reason', ros.get('error'))}")
        else:
            nt = ros["node_throughput"]
            lines.append(f"- frames: {_fmt(nt.get('frames_per_s'))} frames/s reconstructed "
                         f"({nt.get('frames')} frames, {ros['frame']['objects']} objects, "
                         f"MISE {nt.get('mise_resolution')}^3, "
                         f"{ros['frame']['width']}x{ros['frame']['height']}), end-to-end latency "
                         f"{_ms(nt.get('end_to_end_latency'))}; node peak RSS "
                         f"{_fmt(ros['node_memory']['peak_rss_mb'])} MiB{_children(ros['node_memory'])}; Fast DDS transports "
                         f"{ros.get('fastdds_transports')} (node, camera and client)")
            for r in ros["service"]:
                lines.append(f"- service {r['points']} points: spread {_fmt(r['spread']['points_per_s'])} pts/s "
                             f"({_ms(r['spread']['time'])}), inside one object {_fmt(r['inside_one']['points_per_s'])} "
                             f"pts/s ({_ms(r['inside_one']['time'])})")
            first = ros.get("service_first_call")
            if first:
                lines.append(f"- the node's first query since start ({first['points']} points, {first['set']}, node "
                             f"idle): {_fmt(first['seconds'], 's')}")
            u = ros["service_under_load"]
            lines.append(f"- under load, {u['points']} points at {_fmt(u.get('calls_per_s'))} calls/s (one in flight), "
                         f"frames from a camera process: worst run p50 "
                         f"{_fmt(u['p50_s'], 's')}, p99 {_fmt(u['p99_s'], 's')}, max {_fmt(u.get('max_s'), 's')}")
            for i, r in enumerate(u.get("runs", []), 1):
                lines.append(f"  - run {i}: {r['calls']} calls in {_fmt(r['window_s'], 's')} "
                             f"({r['frames_reconstructed_meanwhile']} frames reconstructed meanwhile): p50 "
                             f"{_fmt(r['p50_s'], 's')}, p99 {_fmt(r['p99_s'], 's')}, max {_fmt(r['max_s'], 's')}, "
                             f"{r['over_20ms']} over 20 ms")
    mp = results.get("map")
    if isinstance(mp, dict):
        lines += ["", "## Object map (the node with world_frame, separate process, static scene)", ""]
        if not mp.get("available", False):
            lines.append(f"not measured: {mp.get('reason', mp.get('error'))}")
        else:
            f, c = mp["first_meshes"], mp["converged"]
            lines.append(f"- first meshes: all {f['objects']} objects after {_fmt(f['seconds_from_first_frame'], 's')} "
                         f"({f['frames_until_all']} objects messages; node start-up {_fmt(f['node_startup_s'], 's')})")
            lines.append(f"- converged: {_fmt(c.get('frames_per_s'))} frames/s ({c.get('frames')} frames, "
                         f"{c.get('objects_recomputed_after')} objects recomputed in the frame after, MISE "
                         f"{c.get('mise_resolution')}^3), "
                         f"end-to-end latency {_ms(c.get('end_to_end_latency'))}; node peak RSS "
                         f"{_fmt(mp['node_memory']['peak_rss_mb'])} MiB{_children(mp['node_memory'])}")
            ip = mp.get("in_process")
            if isinstance(ip, dict):
                st = ", ".join(f"{k.replace('_', '-')} {_ms(v)}" for k, v in ip["stages"].items())
                lines.append(f"- the node's map pipeline in this process, once converged "
                             f"(after {ip['frames_until_converged']} frames): {_ms(ip['total'])} a frame "
                             f"({_fmt(ip['frames_per_s'])} frames/s of that work alone, {ip['frames']} frames, "
                             f"{ip['objects']} objects): {st} (medians)")
    errors = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    if errors:
        lines += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines) + "\n"


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, so results.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write(results: dict, out: Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out`` -> their paths."""
    out.mkdir(parents=True, exist_ok=True)
    jp, mp = out / "results.json", out / "results.md"
    jp.write_text(json.dumps(_clean(results), indent=2, sort_keys=False, default=str) + "\n")
    mp.write_text(markdown(results))
    return jp, mp
