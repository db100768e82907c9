"""The soak test's results (:class:`SoakRun`) and what is made of them: the per-minute table, the PASS/MISS
checks, ``soak.csv`` (one row per sample), ``queries.csv`` (one row per call), ``soak_report.md`` and
``soak.png``. No ROS imports (numpy, matplotlib's Agg canvas), so it is tested without a node;
:mod:`occnet_ros.benchmark.soak_sampling` takes the samples and :mod:`occnet_ros.benchmark.soak` runs the processes
and the load.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from occnet_ros.benchmark.soak_sampling import SAMPLE_FIELDS, percentile

RSS_GROWTH_LIMIT_PCT = 5.0
FD_GROWTH_LIMIT = 2
THREAD_GROWTH_LIMIT = 2
WINDOW_S = 60.0
"""Length of the two windows whose median RSS is compared (shorter when the run after warm-up is under 2 min)."""


@dataclass
class SoakRun:
    """Everything one soak measured. Times ``t`` are seconds since the soak's start (after start-up).

    ``samples``: dicts with :data:`SAMPLE_FIELDS`; ``frames``: (t, end-to-end age s, objects) per ``objects``
    message; ``camera_frames``: t of each ``camera_pose`` the camera published; ``queries``: (t, latency s,
    status "ok" / "failed" / "timeout") per call (latency NaN without an answer); ``failures``: message ->
    count of refused calls; ``late``: (t, latency s) of calls answered after the deadline; ``calls_sent`` /
    ``requests_received``: calls made, and requests the node logged as received (None: not logged);
    ``status``: "ok", "failed" (``reason`` says why) or "interrupted"."""

    command: str
    settings: dict
    machine: dict
    started: str
    duration_s: float
    warmup_s: float
    sample_s: float
    ended: str = ""
    elapsed_s: float = 0.0
    startup_s: float = float("nan")
    samples: list[dict] = field(default_factory=list)
    frames: list[tuple[float, float, int]] = field(default_factory=list)
    camera_frames: list[float] = field(default_factory=list)
    queries: list[tuple[float, float, str]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    late: list[tuple[float, float]] = field(default_factory=list)
    calls_sent: int = 0
    requests_received: int | None = None
    status: str = "ok"
    reason: str = ""
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    processes: dict[str, str] = field(default_factory=dict)
    logs: str = ""


def buckets(span_s: float) -> list[tuple[float, float]]:
    """The table's rows: ``span_s`` split into round(span / 60) equal parts (at least one), so a 10-minute run
    has ten 60 s rows and a 30 s run one row."""
    n = max(1, int(round(span_s / 60.0)))
    w = span_s / n if span_s > 0 else 60.0
    return [(i * w, (i + 1) * w) for i in range(n)]


def _index(t: float, edges: list[tuple[float, float]], end_inclusive: bool) -> int:
    """The bucket of time ``t``: events at [a, b) (``end_inclusive`` False), samples at (a, b] (the sample
    at a bucket's end closes it; the sample at 0 belongs to the first)."""
    w = edges[0][1] - edges[0][0]
    i = math.ceil(t / w) - 1 if end_inclusive else math.floor(t / w)
    return min(max(i, 0), len(edges) - 1)


def minute_rows(run: SoakRun) -> list[dict]:
    """One row per bucket (:func:`buckets` of the time run): the node's RSS / fds / threads / children at the
    bucket's last sample, its mean CPU over the bucket's samples, frames, queries and their latencies."""
    span = run.elapsed_s
    if span <= 0:
        return []
    edges = buckets(span)
    rows = [{"from_s": a, "to_s": b, "samples": [], "frames": [], "camera_frames": 0, "lat": [], "ok": 0,
             "failed": 0, "timeout": 0} for a, b in edges]
    for s in run.samples:
        if s["t_s"] <= span + 1e-6:
            rows[_index(s["t_s"], edges, True)]["samples"].append(s)
    for t, age, _ in run.frames:
        if 0 <= t <= span:
            rows[_index(t, edges, False)]["frames"].append(age)
    for t in run.camera_frames:
        if 0 <= t <= span:
            rows[_index(t, edges, False)]["camera_frames"] += 1
    for t, lat, status in run.queries:
        if 0 <= t <= span:
            r = rows[_index(t, edges, False)]
            r[status] += 1
            if status == "ok":
                r["lat"].append(lat * 1e3)
    out = []
    for r in rows:
        last = r["samples"][-1] if r["samples"] else {}
        cpu = [s["node_cpu_percent"] for s in r["samples"] if s is not run.samples[0]]  # 1st: no interval
        out.append({"from_min": r["from_s"] / 60, "to_min": r["to_s"] / 60,
                    "rss_mb": last.get("node_rss_mb", float("nan")), "fds": last.get("node_fds"),
                    "threads": last.get("node_threads"), "children": last.get("children"),
                    "children_rss_mb": last.get("children_rss_mb", float("nan")),
                    "cpu_percent": float(np.mean(cpu)) if cpu else float("nan"),
                    "frames": len(r["frames"]), "camera_frames": r["camera_frames"],
                    "frame_age_p50_s": percentile(r["frames"], 50), "queries_ok": r["ok"], "queries_failed": r["failed"],
                    "queries_timeout": r["timeout"], "p50_ms": percentile(r["lat"], 50), "p99_ms": percentile(r["lat"], 99),
                    "max_ms": max(r["lat"]) if r["lat"] else float("nan")})
    return out


def _check(name: str, ok: bool | None, detail: str) -> dict:
    return {"name": name, "status": "NOT MEASURED" if ok is None else "PASS" if ok else "MISS", "detail": detail}


def _family_rss(sample: dict) -> float:
    """RSS of the node and its child processes (the reconstruction process, the decimation workers), MB: a leak in
    any of them counts."""
    children = sample.get("children_rss_mb", float("nan"))
    return sample["node_rss_mb"] + (children if math.isfinite(children) else 0.0)


def checks(run: SoakRun, rows: list[dict]) -> list[dict]:
    """The soak's criteria -> [{name, status PASS / MISS / NOT MEASURED, detail}]."""
    span, warm = run.elapsed_s, min(run.warmup_s, run.elapsed_s)
    win = min(WINDOW_S, (span - warm) / 2.0)
    post = [s for s in run.samples if s["t_s"] >= warm - 1e-6]
    first = [_family_rss(s) for s in post if s["t_s"] < warm + win]
    last = [_family_rss(s) for s in post if s["t_s"] >= span - win - 1e-6]
    out = []
    if win > 0 and first and last:
        a, b = float(np.median(first)), float(np.median(last))
        growth = 100.0 * (b - a) / a
        out.append(_check("rss_growth", growth <= RSS_GROWTH_LIMIT_PCT,
                          f"RSS of the node and its processes {growth:+.1f} % ({a:.1f} -> {b:.1f} MB: medians of t {warm:.0f}-"
                          f"{warm + win:.0f} s and {span - win:.0f}-{span:.0f} s; limit <= "
                          f"{RSS_GROWTH_LIMIT_PCT:g} %)"))
    else:
        out.append(_check("rss_growth", None, "too few samples after the warm-up"))
    for name, key, limit in (("fds_flat", "node_fds", FD_GROWTH_LIMIT),
                             ("threads_flat", "node_threads", THREAD_GROWTH_LIMIT)):
        vals = [s[key] for s in post if s.get(key) is not None]
        if len(vals) >= 2:
            d = vals[-1] - vals[0]
            out.append(_check(name, d <= limit, f"node {key.split('_')[1]} {vals[0]} -> {vals[-1]} ({d:+d}) "
                                                f"from t {post[0]['t_s']:.0f} s to {post[-1]['t_s']:.0f} s; "
                                                f"limit <= +{limit}"))
        else:
            out.append(_check(name, None, "fewer than 2 samples after the warm-up"))
    n = len(run.queries)
    bad = sum(1 for q in run.queries if q[2] != "ok")
    timeouts = sum(1 for q in run.queries if q[2] == "timeout")
    deadline = run.settings.get("query_deadline_s")
    late = (f": {len(run.late)} answered later (max {max(lat for _, lat in run.late):.1f} s), "
            f"{timeouts - len(run.late)} never" if run.late else "")
    got = (f"; the node logged {run.requests_received} of the {run.calls_sent} requests sent as received"
           if run.requests_received is not None else "")
    out.append(_check("queries_answered", (bad == 0) if n else None,
                      f"{n - bad} of {n} calls answered ({bad - timeouts} refused, {timeouts} past the "
                      f"{deadline} s deadline{late}){got}"))
    per = [r["frames"] for r in rows]
    out.append(_check("frames_every_minute", (min(per) > 0) if per else None,
                      f"frames per row {per} (each > 0)"))
    return out


def _f(v, fmt: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


TABLE_HEADER = ("| minute | node RSS MB | children (MB) | fds | threads | node CPU % | frames | camera frames | "
                "frame age p50 s | queries ok | failed | timed out | p50 ms | p99 ms | max ms |")


def table(rows: list[dict]) -> list[str]:
    lines = [TABLE_HEADER, "|" + "---:|" * TABLE_HEADER.count(" | ") + "---:|"]
    for r in rows:
        lines.append(f"| {r['from_min']:.1f}-{r['to_min']:.1f} | {_f(r['rss_mb'])} | {_f(r['children'], 'd')} "
                     f"({_f(r['children_rss_mb'], '.0f')}) | {_f(r['fds'], 'd')} | {_f(r['threads'], 'd')} | "
                     f"{_f(r['cpu_percent'], '.0f')} | {r['frames']} | {r['camera_frames']} | "
                     f"{_f(r['frame_age_p50_s'], '.2f')} | {r['queries_ok']} | {r['queries_failed']} | "
                     f"{r['queries_timeout']} | {_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {_f(r['max_ms'])} |")
    return lines


def check_lines(results: list[dict]) -> list[str]:
    return [f"{c['status']:<4} {c['name']}: {c['detail']}" for c in results]


def status_line(run: SoakRun) -> str:
    if run.status == "ok":
        return f"run completed: {run.elapsed_s / 60:.2f} min after a {run.startup_s:.1f} s start-up"
    what = "RUN FAILED" if run.status == "failed" else "RUN INTERRUPTED"
    return f"{what} after {run.elapsed_s / 60:.2f} min of {run.duration_s / 60:.2f}: {run.reason or 'interrupted'}"


def markdown(run: SoakRun, rows: list[dict], results: list[dict]) -> str:
    m, s = run.machine, run.settings
    lines = ["# occnet_ros soak test", "", f"**{status_line(run)}**", "",
             f"- command: `{run.command}`",
             f"- started {run.started}, ended {run.ended}; planned {run.duration_s / 60:g} min, warm-up "
             f"{run.warmup_s:.0f} s, a sample every {run.sample_s:g} s; node start-up {_f(run.startup_s)} s",
             f"- machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores ({m.get('usable_cores')} usable), "
             f"{_f(m.get('memory_gb'))} GB memory, load average at start {m.get('loadavg_1_5_15')}",
             f"- load: {s.get('mode')}; camera {s.get('width')}x{s.get('height')} at {s.get('rate_hz')} Hz, "
             f"orbit {s.get('orbit_deg_per_s')} deg/s; queries: {s.get('query_rate_hz')} calls/s of "
             f"{s.get('query_points')} points in the objects' bounding box {s.get('query_region')}, deadline "
             f"{s.get('query_deadline_s')} s, one at a time",
             f"- checkpoint: {s.get('checkpoint')}; ROS_DOMAIN_ID {s.get('domain_id')}, namespace "
             f"{s.get('namespace')}, Fast DDS transports {s.get('fastdds_transports')}, "
             f"FASTDDS_DEFAULT_PROFILES_FILE={s.get('fastdds_profiles_file') or 'unset'}",
             f"- shutdown exit codes: {run.exit_codes} (0 = clean; -15 / -9 = needed SIGTERM / SIGKILL)",
             f"- logs: {run.logs}", "",
             "## Per minute", "",
             "RSS, children, fds and threads: the node process at the row's last sample (children: its child "
             "processes, count and RSS); CPU: mean over the row's samples (100 = one core); frames: `objects` "
             "messages received (frames processed); camera frames: frames the camera published; frame age: "
             "objects arrival - camera stamp; latencies: answered `query_occupancy` calls, round trip.", ""]
    lines += table(rows)
    lines += ["", "## Checks", "", "```", *check_lines(results), "```"]
    if run.failures:
        lines += ["", "## Refused calls", ""] + [f"- {n} x {msg}" for msg, n in
                                                   sorted(run.failures.items(), key=lambda kv: -kv[1])[:10]]
    lines += ["", "## Processes", ""] + [f"- {name}: `{cmd}`" for name, cmd in run.processes.items()]
    lines += ["", "Files: `soak.csv` (the samples), `queries.csv` (every call), `soak.png` (the curves).", ""]
    return "\n".join(lines)


def write_csv(run: SoakRun, out: Path) -> tuple[Path, Path]:
    samples, calls = out / "soak.csv", out / "queries.csv"
    with open(samples, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SAMPLE_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(run.samples)
    with open(calls, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "latency_ms", "status"])
        for t, lat, status in run.queries:
            w.writerow([f"{t:.3f}", "" if math.isnan(lat) else f"{lat * 1e3:.3f}", status])
    return samples, calls


def plot(run: SoakRun, rows: list[dict], path: Path) -> Path:
    """RSS, fds / threads, latency percentiles (per sample interval) and frames per row against time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 11), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True)
    t = np.array([s["t_s"] / 60 for s in run.samples])

    def col(key):
        return np.array([np.nan if s.get(key) is None else s[key] for s in run.samples], np.float64)

    ax = axes[0]
    ax.plot(t, col("node_rss_mb"), "o-", ms=3, label="node")
    ax.plot(t, col("node_rss_mb") + col("children_rss_mb"), "s--", ms=3, label="node + children")
    ax.plot(t, col("camera_rss_mb"), "^:", ms=3, label="sim_camera")
    ax.set_ylabel("RSS, MB")
    ax = axes[1]
    ax.plot(t, col("node_fds"), "o-", ms=3, label="open fds")
    ax.plot(t, col("node_threads"), "s-", ms=3, label="threads")
    ax.plot(t, col("children"), "^-", ms=3, label="child processes")
    ax.set_ylabel("node: count")
    ax = axes[2]
    for key, style in (("latency_p50_ms", "o-"), ("latency_p99_ms", "s-"), ("latency_max_ms", "^:")):
        ax.plot(t, col(key), style, ms=3, label=key.split("_")[1])
    ax.set_yscale("log")
    ax.set_ylabel("query latency, ms")
    ax = axes[3]
    if rows:
        mid = [(r["from_min"] + r["to_min"]) / 2 for r in rows]
        width = 0.8 * (rows[0]["to_min"] - rows[0]["from_min"])
        ax.bar(mid, [r["frames"] for r in rows], width=width, label="frames processed")
        ax.plot(mid, [r["camera_frames"] for r in rows], "ko--", ms=4, label="camera frames published")
    ax.set_ylabel("frames per row")
    ax.set_xlabel("minutes since the soak started")
    for ax in axes:
        ax.axvspan(0, run.warmup_s / 60, color="0.9", zorder=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_title(f"occnet_ros soak: {run.settings.get('mode')}, {run.duration_s / 60:g} min "
                      f"(grey: warm-up); {status_line(run)}", fontsize=9)
    fig.savefig(path, dpi=100)
    return path


def write_all(run: SoakRun, out: Path) -> dict:
    """Every output file; returns {rows, checks, paths}."""
    out.mkdir(parents=True, exist_ok=True)
    rows = minute_rows(run)
    results = checks(run, rows)
    samples, calls = write_csv(run, out)
    md = out / "soak_report.md"
    md.write_text(markdown(run, rows, results))
    png = plot(run, rows, out / "soak.png")
    return {"rows": rows, "checks": results, "paths": {"csv": samples, "queries": calls, "report": md, "png": png}}
