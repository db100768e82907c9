"""``occnet_bench``: the report logic on synthetic results, one section in process, and (slow) the whole
``--quick`` run end to end, as ``make bench`` runs it, checking that every section holds measured,
mutually consistent numbers. No speed is asserted: targets are reported, never tested."""
import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from occnet_ros.benchmark import latency, report
from occnet_ros.benchmark.common import QUICK_SIZES, make_context
from occnet_ros.benchmark.node_throughput import unavailable_reason
from occnet_ros.cli import bench
from occnet_ros.ros.launch_spec import default_params_file
from occnet_ros.ros.node_params import NodeParams

VENV_BIN = Path(sys.executable).parent


def _row(res, n, total):
    return {"resolution": res, "cloud_points": n, "stages": {"total": {"median_s": total}}}


def _results(recon_s, ratio, iou, spread, inside, p50, map_fps=3.0):
    return {"latency": {"sizes": [_row(128, 1000, 9.0), _row(128, 5000, recon_s), _row(128, 20000, 9.0),
                                  _row(64, 5000, recon_s / 4)]},
            "mise_vs_dense": {"eval_ratio_dense_over_mise": ratio, "mesh_iou": iou},
            "queries": {"sizes": [{"points": 100_000, "store_spread": {"points_per_s": spread},
                                   "object_exact_inside": {"points_per_s": inside}}]},
            "ros": {"service_under_load": {"p50_s": p50, "p99_s": 1.5 * p50, "max_s": 4 * p50,
                                           "frames_reconstructed_meanwhile": 1}},
            "map": {"converged": {"frames_per_s": map_fps}}}


def test_targets_pass_miss_and_not_measured():
    good = {t["name"]: t["status"] for t in report.check_targets(_results(0.4, 12.0, 0.995, 2e6, 3e5, 0.01))}
    assert set(good.values()) == {"PASS"} and len(good) == 10
    bad = {t["name"]: t["status"] for t in report.check_targets(_results(0.7, 8.0, 0.98, 5e5, 1e5, 0.03, 1.5))}
    assert set(bad.values()) == {"MISS"}
    partial = _results(0.4, float("nan"), 0.995, 2e6, 3e5, 0.01)
    del partial["ros"]
    rows = {t["name"]: t for t in report.check_targets(partial)}
    assert rows["mise_fewer_evaluations"]["status"] == "NOT MEASURED"
    assert rows["service_10k_p50_under_load_s"]["status"] == "NOT MEASURED"
    assert rows["service_10k_max_under_load_s"]["status"] == "NOT MEASURED"
    assert rows["object_128_total_s"]["measured"] == 0.4  # the 5k row at the finest grid, not the first one
    assert rows["object_64_total_s"]["measured"] == 0.1  # the row one MISE step coarser
    idle = _results(0.4, 12.0, 0.995, 2e6, 3e5, 0.01)
    idle["ros"]["service_under_load"]["frames_reconstructed_meanwhile"] = 0  # the calls overlapped no work
    rows = {t["name"]: t for t in report.check_targets(idle)}
    assert rows["service_10k_p50_under_load_s"]["status"] == "NOT MEASURED"


def test_json_is_strict_and_markdown_lists_targets(tmp_path):
    res = {"machine": {}, "weights": {}, "floor": {"error": "ValueError: boom"},
           "mise_vs_dense": {"mesh_iou": float("nan")}}
    res["targets"] = report.check_targets(res)
    jp, mp = report.write(res, tmp_path)
    data = json.loads(jp.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["mise_vs_dense"]["mesh_iou"] is None
    text = mp.read_text()
    assert "## Targets" in text and "NOT MEASURED" in text and "boom" in text


def test_markdown_latency_table_has_the_stages_in_processing_order():
    stage = {"median_s": 0.002, "min_s": 0.001, "max_s": 0.003, "runs": 2}
    row = {"cloud_points": 5000, "stages": {k: stage for k in latency.STAGES}, "mise_n_evals": 123,
           "faces_marching_cubes": 54321, "faces_published": 20000, "simplify_note": "", "message_bytes": 999,
           "floor": {"mise_s": 0.001}}
    text = report.markdown({"latency": {"resolution": 128, "max_faces": 20000, "node_params": "x.yaml",
                                        "messages_measured": True, "sizes": [row]}})
    header = next(line for line in text.splitlines() if line.startswith("| grid | points |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    # simplification before the anchoring, as the reconstructor does it
    assert cols[cols.index("marching_cubes") + 1:cols.index("total")] == ["simplify", "anchor", "colour", "message"]
    assert [c for c in cols if c in latency.STAGES] == [k for k in latency.STAGES if k != "serialize"]
    assert "| 128^3 | 5000 |" in text
    assert "54321 -> 20000" in text and "mesh.max_faces 20000" in text and "x.yaml" in text


def _param_file(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_latency_reads_the_node_parameter_file(tmp_path):
    shipped = yaml.safe_load(default_params_file().read_text())["/**"]["ros__parameters"]
    params, source = latency.node_params()
    assert source == str(default_params_file())
    assert params.mesh.max_faces == shipped["mesh"]["max_faces"]
    assert params.filter.outlier_neighbors == shipped["filter"]["outlier_neighbors"]
    # the node's own entry applies after the wildcard one, as in ROS
    p = _param_file(tmp_path, "/**:\n  ros__parameters:\n    marker_alpha: 0.5\n    mesh: {max_faces: 300}\n"
                              "reconstruction_node:\n  ros__parameters:\n    mesh: {max_faces: 777}\n")
    params, source = latency.node_params(p)
    assert (params.mesh.max_faces, params.marker_alpha, source) == (777, 0.5, str(p))
    assert params.reconstruction.resolution0 == NodeParams().reconstruction.resolution0
    for text, words in [("/**:\n  ros__parameters:\n    mesh: {max_faces: 2}\n", "max_faces"),
                        ("other_node:\n  ros__parameters: {seed: 1}\n", "no parameters for"),
                        ("/**:\n  seed: 1\n", "ros__parameters"),
                        ("/**:\n  ros__parameters:\n    mesh: {max_facez: 10}\n", "max_facez")]:
        with pytest.raises(ValueError, match=words) as e:
            latency.node_params(_param_file(tmp_path, text))
        assert str(tmp_path / "params.yaml") in str(e.value)


def test_latency_section_simplifies_like_the_node(tmp_path):
    """One small size in process, with a face budget below the marching-cubes mesh: the published mesh
    (what the messages carry) is the simplified one, every vertex coloured."""
    sizes = dataclasses.replace(QUICK_SIZES, cloud_sizes=(300,))
    before = _compute_threads()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ctx = make_context(None, tmp_path, sizes, repeats=1)
        params = NodeParams()
        params.mesh.max_faces = 1000
        res = latency.run(ctx, params)
    finally:
        torch.set_num_threads(threads)
    assert res["max_faces"] == 1000 and res["node_params"] == "given"
    # the section's reconstructors closed their compute threads
    assert not _compute_threads() - before
    r, coarse = res["sizes"]  # the benchmark's grid, then one MISE step coarser
    assert (r["resolution"], coarse["resolution"]) == (32, 16) and coarse["cloud_points"] == 300
    assert set(r["stages"]) == set(latency.STAGES)
    _check_latency_row(r, res["messages_measured"])
    assert r["faces_marching_cubes"] > 1000
    assert r["simplified"] and r["faces_published"] <= 1000, r["simplify_note"]


def _check_latency_row(r, messages_measured):
    stages = ("crop", "clean", "normalize", "encode", "mise", "marching_cubes", "simplify", "colour", "total")
    for stage in stages + (("message", "serialize") if messages_measured else ()):
        _check_time(r["stages"][stage])
    assert r["points_after_clean"] <= r["cloud_points"]
    assert r["stages"]["total"]["median_s"] >= r["stages"]["mise"]["median_s"]
    assert 0 < r["faces_published"] <= r["faces_marching_cubes"]
    assert r["simplified"] == (r["faces_published"] < r["faces_marching_cubes"])
    assert r["colored_vertices"] == r["vertices_published"]
    if messages_measured:
        assert r["message_bytes"] == r["message_bytes_objects"] + r["message_bytes_markers"]
        # the messages carry the published mesh: Mesh = V points (3 float64) + F triangles (3 uint32) + V
        # colours (4 float32); marker = 3 points and 3 colours per face; plus headers of under 4 KiB
        v, f = r["vertices_published"], r["faces_published"]
        assert 40 * v + 12 * f < r["message_bytes_objects"] < 40 * v + 12 * f + 4096
        assert 120 * f < r["message_bytes_markers"] < 120 * f + 4096
    else:
        assert r["message_bytes"] == 0 and math.isnan(r["stages"]["message"]["median_s"])


def _compute_threads() -> set[int]:
    """Idents of the live compute-pool threads (other tests' reconstructors may hold some)."""
    return {t.ident for t in threading.enumerate() if t.name.startswith("occnet_compute")}


def test_floor_and_mise_sections_in_process(tmp_path):
    before = _compute_threads()
    threads = torch.get_num_threads()
    try:
        res = bench.run(bench.parse_args(["--quick", "--repeats", "1", "--threads", "1", "--out", str(tmp_path),
                                          "--sections", "mise"]))
    finally:
        torch.set_num_threads(threads)
    assert set(res) >= {"floor", "mise_vs_dense", "targets", "machine", "weights"}
    assert "latency" not in res and "ros" not in res
    assert not _compute_threads() - before  # the section's reconstructors closed their compute threads
    _check_floor(res["floor"])
    assert res["machine"]["device"] == "cpu" and res["floor"]["device"] == "cpu"
    _check_mise(res["mise_vs_dense"])
    assert res["weights"]["kind"] in ("random", "trained")
    assert (tmp_path / "results.json").is_file() and (tmp_path / "results.md").is_file()


@pytest.mark.parametrize("kind", ["local", "global"])
def test_encode_floor_charges_each_part_at_its_rate(tmp_path, kind):
    """The points' MLP at the float32 decoder-size rate; a feature-plane U-Net at the rate of its own precision
    (float32 where that precision was not measured); a global network's per-code work at the float32 rate."""
    ctx = make_context(None, tmp_path, QUICK_SIZES, repeats=1)
    if kind == "global":
        ctx.model = ctx.model.__class__(dataclasses.replace(ctx.model.config, kind="global", global_context=False,
                                                            local_pool=False))
        from occnet_ros.network.model import cost_report
        ctx.costs = cost_report(ctx.model.config)
    ctx.rate_gflops, ctx.unet_rate_gflops = 100.0, {"float32": 50.0, "bfloat16": 400.0}
    points = 12 * ctx.n_input_points * ctx.costs["encoder_inference_flops_per_input_point"] / 100e9
    per_code = 12 * ctx.costs["prepare_flops_per_code"]
    got = {d: ctx.encode_floor_s(12, d) for d in (torch.float32, torch.bfloat16, torch.float16)}
    if kind == "local":
        assert got[torch.float32] == pytest.approx(points + per_code / 50e9)
        assert got[torch.bfloat16] == pytest.approx(points + per_code / 400e9)
        assert got[torch.float16] == pytest.approx(points + per_code / 50e9)
    else:
        assert all(v == pytest.approx(points + per_code / 100e9) for v in got.values())


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _check_time(t):
    assert _positive(t["median_s"]) and t["min_s"] <= t["median_s"] <= t["max_s"] and t["runs"] >= 1


def _check_floor(f):
    m = f["matmul_float32"]
    _check_time(m["time"])
    assert m["gflops"] == pytest.approx(2 * m["rows"] * m["hidden"] ** 2 / m["time"]["min_s"] / 1e9)
    for r in f["decoder_by_chunk"]:
        assert r["points_per_s"] == pytest.approx(r["points"] / r["time"]["median_s"])
    assert f["best_chunk"] in [r["chunk"] for r in f["decoder_by_chunk"]]
    assert 0 <= f["bfloat16_error"]["max_abs_prob_diff"] < 1
    unet = f["matmul_unet"]
    assert set(unet) == {"float32", "bfloat16"}  # the default architecture has feature planes; on a CPU
    for r in unet.values():
        assert r["gflops"] == pytest.approx(2 * r["rows"] * r["hidden"] ** 2 / r["time"]["min_s"] / 1e9)


def _check_mise(mv):
    r = mv["resolution"]
    mise, dense = mv["mise"], mv["dense"]
    assert dense["n_evals"] == (r + 1) ** 3
    assert sum(mise["evals_per_level"]) == mise["n_evals"] and 0 < mise["n_evals"] < dense["n_evals"]
    _check_time(mise["time"])
    _check_time(dense["time"])
    assert mv["eval_ratio_dense_over_mise"] == pytest.approx(dense["n_evals"] / mise["n_evals"])
    assert mv["time_ratio_dense_over_mise"] == pytest.approx(dense["time"]["median_s"] / mise["time"]["median_s"])
    assert mv["mesh_iou"] is None or 0.0 <= mv["mesh_iou"] <= 1.0
    assert mv["watertight"]["mise"] and mv["watertight"]["dense"]
    assert _positive(mise["floor_s"]) and dense["floor_s"] > mise["floor_s"]


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path):
    """``occnet_bench --quick`` as a program: every section, measured numbers, exit code 0."""
    out = tmp_path / "bench"
    proc = subprocess.run([str(VENV_BIN / "occnet_bench"), "--quick", "--repeats", "1", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert "## Targets" in (out / "results.md").read_text() and "## Targets" in proc.stdout
    assert res["machine"]["gc_frozen_objects"] > 10_000  # torch's and the network's objects, frozen as in the node
    assert res["machine"]["blas_threads"] and set(res["machine"]["blas_threads"]) == {1}  # numpy's BLAS as in the node
    assert f"numpy BLAS threads {res['machine']['blas_threads']}" in proc.stdout
    for key in ("floor", "mise_vs_dense", "latency", "frame", "queries", "ros", "map"):
        assert key in res and "error" not in res[key], res.get(key)
    _check_floor(res["floor"])
    _check_mise(res["mise_vs_dense"])
    sizes = res["sizes"]
    lat = res["latency"]["sizes"]
    finest = sizes["resolution0"] * 2 ** sizes["upsampling_steps"]
    assert [(r["resolution"], r["cloud_points"]) for r in lat] == \
        [(finest, n) for n in sizes["cloud_sizes"]] + [(finest // 2, sizes["cloud_sizes"][len(sizes["cloud_sizes"]) // 2])]
    assert res["latency"]["max_faces"] == yaml.safe_load(default_params_file().read_text()
                                                         )["/**"]["ros__parameters"]["mesh"]["max_faces"]
    for r in lat:
        _check_latency_row(r, res["latency"]["messages_measured"])
        assert r["faces_published"] <= res["latency"]["max_faces"] or r["simplify_note"]
    q = res["queries"]
    assert [r["points"] for r in q["sizes"]] == sizes["query_sizes"]
    for r in q["sizes"]:
        for k in ("object_exact_inside", "object_grid_inside", "store_spread", "store_inside_one"):
            assert r[k]["points_per_s"] == pytest.approx(r["points"] / r[k]["time"]["median_s"])
        assert 0 <= r["store_spread"]["points_reaching_network"] < r["points"]
    assert 0.0 <= q["grid_vs_exact"]["max_abs_prob_diff"] <= 1.0
    statuses = {t["name"]: t["status"] for t in res["targets"]}
    assert len(statuses) == 10 and set(statuses.values()) <= {"PASS", "MISS", "NOT MEASURED"}
    ros = res["ros"]
    if unavailable_reason() is not None:
        assert ros["available"] is False
        pytest.skip(f"ROS part not runnable here: {ros['reason']}")
    assert ros["available"] and ros["node_exit_code"] == 0
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:  # the section ran on the shipped profile
        assert ros["fastdds_transports"] == "SHM (32 MiB segment) + UDPv4 (profile fastdds_profile.xml)"
    assert ros["node_throughput"]["frames"] >= 1 and ros["frame"]["objects"] >= 3
    assert ros["frame"]["width"] == 640 and ros["frame"]["height"] == 480
    assert _positive(ros["node_memory"]["peak_rss_mb"])
    for r in ros["service"]:
        for k in ("spread", "inside_one"):
            assert r[k]["points_per_s"] == pytest.approx(r["points"] / r[k]["time"]["median_s"])
    first = ros["service_first_call"]
    assert first["points"] == sizes["query_sizes"][0] and _positive(first["seconds"])
    u = ros["service_under_load"]
    assert len(u["runs"]) == 3 and u["calls"] == sum(r["calls"] for r in u["runs"])
    for r in u["runs"]:
        assert r["calls"] >= sizes["latency_calls"] and 0 < r["p50_s"] <= r["p99_s"] <= r["max_s"] <= u["max_s"]
        assert r["frames_reconstructed_meanwhile"] >= 2  # the calls overlapped whole reconstructions
        assert r["window_s"] >= (r["calls"] - 1) / u["calls_per_s"]  # paced, not back to back
    fr = res["frame"]
    assert fr["available"] and fr["frame"]["objects"] >= 3 and fr["one_object"]["objects"] == 1
    assert fr["batched"]["objects"] == fr["frame"]["objects"] and _positive(fr["batched_over_one_by_one"])
    assert isinstance(fr["node_batches"], bool)
    threads = fr["frame"]["object_threads"]  # the node's compute threads took the objects at once (2 on 2 cores)
    assert threads == min(os.cpu_count() if not hasattr(os, "sched_getaffinity") else len(os.sched_getaffinity(0)),
                          fr["frame"]["objects"]) and fr["one_object"]["object_threads"] == 1
    assert sum(fr["frame"]["share"].values()) == pytest.approx(
        1.0 - fr["frame"]["unaccounted_s"] / (threads * fr["frame"]["stages"]["total"]["median_s"]))
    assert _positive(fr["frame"]["stages"]["encode"]["median_s"]) and _positive(fr["frame"]["floor"]["mise"])
    assert _positive(fr["frame"]["floor"]["encode"])
    mp = res["map"]
    assert mp["available"] and mp["node_exit_code"] == 0 and mp["frame"]["objects"] >= 3
    assert mp["first_meshes"]["objects"] == mp["frame"]["objects"] and mp["first_meshes"]["seconds_from_first_frame"] > 0
    assert mp["converged"]["frames"] >= 2 and _positive(mp["converged"]["frames_per_s"])
    assert mp["converged"]["objects_recomputed_after"] == 0  # a static scene: codes and meshes kept
    ip = mp["in_process"]  # the map pipeline without ROS, converged frames stage by stage
    assert ip["objects"] == mp["frame"]["objects"] and ip["frames"] == 4 and ip["frames_until_converged"] >= 1
    assert _positive(ip["total"]["median_s"]) and ip["frames_per_s"] == pytest.approx(1 / ip["total"]["median_s"])
    assert set(ip["stages"]) == {"segmentation", "clean", "known_empty", "integrate", "reconstruct"}
    assert all(0.0 <= v["median_s"] <= ip["total"]["max_s"] for v in ip["stages"].values())  # parts of a frame
    assert ip["stages"]["clean"]["median_s"] > 0 and ip["stages"]["integrate"]["median_s"] > 0
    assert "map pipeline in this process" in (out / "results.md").read_text()
    assert set(statuses.values()) <= {"PASS", "MISS"}  # everything measured


def test_gil_stall_meter_sees_a_call_that_holds_the_gil_and_not_a_sleep():
    """A builtin sum over a range runs in C without releasing the GIL: the helper thread waits for all of
    it. time.sleep releases the GIL: the helper keeps running. (Margins are wide: this checks what the
    meter measures, not how fast anything is.)"""
    import time

    from occnet_ros.benchmark.common import GilStallMeter

    t0 = time.perf_counter()
    with GilStallMeter() as held:
        sum(range(20_000_000))
    hold = time.perf_counter() - t0
    with GilStallMeter() as slept:
        time.sleep(hold)
    assert hold > 0.1 and held.max_s > 0.5 * hold
    assert slept.max_s < 0.25 * hold


def test_ros_sections_share_one_transport_setting_and_restore_the_environment(monkeypatch):
    from occnet_ros.benchmark.node_throughput import section_environment
    from occnet_ros.ros.launch_spec import fastdds_profile_file

    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    with section_environment() as transports:
        assert transports == "SHM (32 MiB segment) + UDPv4 (profile fastdds_profile.xml)"
        assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(fastdds_profile_file())
        assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "")  # a user's choice is kept, and kept afterwards
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")
    with pytest.raises(RuntimeError):
        with section_environment() as transports:
            assert transports == "builtin UDPv4"
            raise RuntimeError("a failing section still restores the environment")
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == "" and os.environ["FASTDDS_BUILTIN_TRANSPORTS"] == "UDPv4"
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: test_cuda_path runs the GPU bench")
def test_bench_on_cuda_without_cuda_stops_at_start_naming_the_reason(tmp_path):
    proc = subprocess.run([str(VENV_BIN / "occnet_bench"), "--device", "cuda", "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--device cuda" in proc.stderr and "CUDA" in proc.stderr
    assert not (tmp_path / "b").exists()  # nothing measured, nothing written


def test_views_saved_by_one_run_are_the_objects_of_another(tmp_path, monkeypatch):
    """--save-views keeps the rendered test objects; --views benchmarks those without rendering (a machine without
    open3d); a view the file lacks, or a file that is no views file, stops with a message naming the file."""
    from occnet_ros.benchmark import common
    from occnet_ros.benchmark.common import ViewSet

    views = ViewSet()
    first = views.get(0, "mug", 0)
    assert views.get(0, "mug", 0) is first  # rendered once
    path = views.save(tmp_path / "v" / "views.pkl")
    monkeypatch.setattr(common, "realistic_object", lambda *a: pytest.fail("rendered instead of loaded"))
    loaded = ViewSet.load(path)
    again = loaded.get(0, "mug", 0)
    np.testing.assert_array_equal(again.points, first.points)
    np.testing.assert_array_equal(again.up, first.up)
    np.testing.assert_array_equal(again.depth_view.depth, first.depth_view.depth)
    assert again.mesh.faces.shape == first.mesh.faces.shape and again.family == "mug"
    with pytest.raises(KeyError, match="views.pkl holds no view for seed 1, family box"):
        loaded.get(1, "box", 0)
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="bad.pkl"):
        ViewSet.load(tmp_path / "bad.pkl")
    proc = subprocess.run([sys.executable, "-m", "occnet_ros.cli.bench", "--views", str(tmp_path / "bad.pkl"),
                           "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bad.pkl" in proc.stderr and not (tmp_path / "b").exists()
