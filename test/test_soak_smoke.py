"""``occnet_soak``: the report logic on synthetic runs (per-minute rows, PASS/MISS checks, files), the raw
``objects`` reading, and (slow) a 30 s soak end to end on a small camera with a random-weight checkpoint."""
from __future__ import annotations

import csv
import math
import subprocess

import pytest

from ros_helpers import REPO, VENV_BIN, node_env, random_domain_id, write_random_checkpoint

from occnet_ros.benchmark import soak_report
from occnet_ros.benchmark.soak_report import SoakRun, checks, minute_rows, write_all
from occnet_ros.benchmark.soak_sampling import objects_count


def _run(minutes=10.0, rss=lambda t: 500.0, fds=lambda t: 40, threads=lambda t: 30, bad_queries=0,
         no_frames_after=None) -> SoakRun:
    """A synthetic 10-sample-per-minute run: one frame every 3 s, 10 calls/s of 20 ms."""
    span = 60.0 * minutes
    run = SoakRun(command="occnet_soak", settings={"query_deadline_s": 2.0, "mode": "test"}, machine={},
                  started="start", duration_s=span, warmup_s=min(120.0, 0.2 * span), sample_s=6.0, elapsed_s=span)
    t = 0.0
    while t <= span + 1e-9:
        run.samples.append({"t_s": t, "node_rss_mb": rss(t), "node_fds": fds(t), "node_threads": threads(t),
                            "node_cpu_percent": 100.0, "children": 2, "children_rss_mb": 300.0,
                            "camera_rss_mb": 250.0, "latency_p50_ms": 20.0, "latency_p99_ms": 30.0,
                            "latency_max_ms": 40.0})
        t += 6.0
    run.frames = [(float(t), 2.5, 5) for t in range(0, int(span), 3)
                  if no_frames_after is None or t < no_frames_after]
    run.camera_frames = [float(t) for t in range(0, int(span), 2)]
    run.queries = [(i / 10.0, 0.02, "ok") for i in range(int(span * 10))]
    for i in range(bad_queries):
        run.queries[100 + i] = (run.queries[100 + i][0], float("nan"), "timeout")
    return run


def _status(run: SoakRun) -> dict[str, str]:
    return {c["name"]: c["status"] for c in checks(run, minute_rows(run))}


def test_rows_are_minutes_with_end_of_minute_samples():
    rows = minute_rows(_run(10.0, rss=lambda t: 500.0 + t / 60.0))
    assert len(rows) == 10 and rows[0]["from_min"] == 0 and rows[-1]["to_min"] == 10
    assert rows[0]["rss_mb"] == pytest.approx(501.0)  # the sample at t = 60 s closes minute 0
    assert [r["frames"] for r in rows] == [20] * 10 and all(r["camera_frames"] == 30 for r in rows)
    assert all(r["queries_ok"] == 600 and r["p50_ms"] == pytest.approx(20.0) for r in rows)
    assert len(minute_rows(_run(0.5))) == 1


def test_checks_pass_on_a_flat_run_and_miss_each_leak():
    assert set(_status(_run()).values()) == {"PASS"}
    assert _status(_run(rss=lambda t: 500.0 + t / 6.0))["rss_growth"] == "MISS"  # +10 MB a minute
    assert _status(_run(rss=lambda t: 300.0 if t < 120 else 500.0))["rss_growth"] == "PASS"  # warm-up only
    assert _status(_run(fds=lambda t: 40 + int(t // 60)))["fds_flat"] == "MISS"
    assert _status(_run(threads=lambda t: 30 + int(t // 100)))["threads_flat"] == "MISS"
    assert _status(_run(bad_queries=1))["queries_answered"] == "MISS"
    late = _run(bad_queries=2)
    late.late, late.calls_sent, late.requests_received = [(10.0, 3.5)], len(late.queries), len(late.queries)
    detail = next(c["detail"] for c in checks(late, minute_rows(late)) if c["name"] == "queries_answered")
    assert "2 past the 2.0 s deadline: 1 answered later (max 3.5 s), 1 never" in detail
    assert _status(_run(no_frames_after=500.0))["frames_every_minute"] == "MISS"
    short = _status(_run(0.5))  # 6 s warm-up, two 12 s windows
    assert short["rss_growth"] == "PASS" and short["fds_flat"] == "PASS"


def test_write_all_files(tmp_path):
    run = _run(2.0)
    run.failures = {"success=False, 0 answers: no objects": 3}
    res = write_all(run, tmp_path)
    text = res["paths"]["report"].read_text()
    assert soak_report.TABLE_HEADER in text and "PASS rss_growth" in text and "no objects" in text
    with open(res["paths"]["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(run.samples) and set(rows[0]) == set(soak_report.SAMPLE_FIELDS)
    assert res["paths"]["png"].stat().st_size > 10_000


def test_objects_count_reads_the_raw_message():
    from rclpy.serialization import serialize_message

    from occnet_ros.msg import ReconstructedObject, ReconstructedObjectArray

    for frame_id in ("", "w", "world", "camera_color_optical_frame"):
        msg = ReconstructedObjectArray(objects=[ReconstructedObject() for _ in range(len(frame_id) % 4 + 1)])
        msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = frame_id, 7, 250_000_000
        stamp, n = objects_count(serialize_message(msg))
        assert stamp == pytest.approx(7.25) and n == len(msg.objects)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_short_soak_end_to_end(tmp_path):
    """30 s of a 160x120 camera at 2 Hz, a random network at 8^3 x 2: samples, table, checks, frames, answers."""
    ckpt = write_random_checkpoint(tmp_path / "random_test_double.pt")
    out = tmp_path / "soak"
    cmd = [str(VENV_BIN / "occnet_soak"), "--minutes", "0.5", "--sample-s", "2", "--out", str(out),
           "--checkpoint", str(ckpt), "--width", "160", "--height", "120", "--rate", "2",
           "--node-param", "reconstruction.resolution0:=8", "--node-param", "reconstruction.upsampling_steps:=1",
           "--node-param", "segmentation.min_points:=20"]
    proc = subprocess.run(cmd, env=node_env(random_domain_id()), capture_output=True, text=True, timeout=280,
                          cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "soak.csv") as f:
        samples = list(csv.DictReader(f))
    assert len(samples) >= 10 and all(not math.isnan(float(s["node_rss_mb"])) for s in samples)
    assert int(samples[-1]["frames_total"]) > 0 and int(samples[-1]["queries_ok_total"]) > 0
    report = (out / "soak_report.md").read_text()
    assert soak_report.TABLE_HEADER in report and "run completed" in report
    assert "{'reconstruction_node': 0, 'sim_camera': 0}" in report  # both stopped cleanly by SIGINT
    for name in ("rss_growth", "fds_flat", "threads_flat", "queries_answered", "frames_every_minute"):
        assert any(line.split()[:2] in (["PASS", f"{name}:"], ["MISS", f"{name}:"]) for line in report.splitlines())
        assert f" {name}: " in proc.stdout
    assert (out / "soak.png").stat().st_size > 10_000 and (out / "queries.csv").is_file()
