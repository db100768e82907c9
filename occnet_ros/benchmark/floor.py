"""Section "floor": what this machine can do. The float32 matmul rate at the decoder's size (rows =
a large batch of points, hidden x hidden weights) sets the FLOPs-based floors of the report; a feature-plane
encoder's U-Net, which runs in the node's precision (bfloat16 on a CPU with native bfloat16), takes the matmul rate
at its widest layer in that precision. The decoder's own rate by chunk size shows how close the fused decoder gets
to its floor, and where the cache stops helping; bfloat16 is measured, with its error against float32, as an option.
"""
from __future__ import annotations

import torch

from occnet_ros.benchmark.common import BenchContext, timed


def matmul_rate(hidden: int, rows: int, repeats: int, dtype: torch.dtype = torch.float32,
                ctx: BenchContext | None = None) -> dict:
    """GFLOP/s of ``(rows, hidden) @ (hidden, hidden)`` (2 FLOPs per multiply-add) on ``ctx.device`` (None: the
    CPU): ``gflops`` from the fastest of at least 5 runs (the floor is what the machine can do), ``gflops_median``
    as well."""
    g = torch.Generator().manual_seed(0)
    device = ctx.device if ctx is not None else "cpu"
    a = torch.randn(rows, hidden, generator=g).to(device=device, dtype=dtype)
    w = torch.randn(hidden, hidden, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(rows, hidden, dtype=dtype, device=device)
    sync = ctx.sync if ctx is not None else (lambda: None)
    with torch.inference_mode():
        t, _ = timed(lambda: (torch.mm(a, w, out=out), sync()), max(5, repeats), warmup=2)
    flops = 2.0 * rows * hidden * hidden
    return {"rows": rows, "hidden": hidden, "dtype": str(dtype).replace("torch.", ""),
            "gflops": flops / t["min_s"] / 1e9, "gflops_median": flops / t["median_s"] / 1e9, "time": t}


def decoder_rate(ctx: BenchContext, chunk: int, n_points: int, dtype: torch.dtype = torch.float32,
                 fuse: bool = True) -> dict:
    """Points/s of the prepared decoder on ``n_points`` canonical points in chunks of ``chunk``."""
    model = ctx.model
    g = torch.Generator().manual_seed(1)
    pts = ((torch.rand(n_points, 3, generator=g) - 0.5) * 1.1).to(ctx.device)
    with torch.inference_mode():
        code = model.encode((torch.rand(1, ctx.n_input_points, 3, generator=g) - 0.5).to(ctx.device))
        prep = model.prepare(code, dtype=dtype, fuse=fuse)

        def run():
            for s in range(0, n_points, chunk):
                model.decode_prepared(pts[s:s + chunk].unsqueeze(0), prep)
            ctx.sync()

        t, _ = timed(run, ctx.repeats)
    pps = n_points / t["median_s"]
    return {"chunk": chunk, "dtype": str(dtype).replace("torch.", ""), "fused": fuse, "points": n_points,
            "points_per_s": pps, "floor_points_per_s": 1.0 / ctx.decoder_floor_s(1), "time": t}


def precision_error(ctx: BenchContext, dtype: torch.dtype, n_points: int = 65536) -> dict:
    """Largest and mean |probability difference| of the ``dtype`` fast path against float32."""
    model = ctx.model
    g = torch.Generator().manual_seed(2)
    pts = ((torch.rand(1, n_points, 3, generator=g) - 0.5) * 1.1).to(ctx.device)
    with torch.inference_mode():
        code = model.encode((torch.rand(1, ctx.n_input_points, 3, generator=g) - 0.5).to(ctx.device))
        ref = torch.sigmoid(model.decode_prepared(pts, model.prepare(code)))
        low = torch.sigmoid(model.decode_prepared(pts, model.prepare(code, dtype=dtype)))
        d = (ref - low).abs()
        flips = ((ref >= ctx.threshold) != (low >= ctx.threshold)).float().mean()
    return {"dtype": str(dtype).replace("torch.", ""), "max_abs_prob_diff": float(d.max()),
            "mean_abs_prob_diff": float(d.mean()), "occupancy_flip_fraction": float(flips)}


def unet_rates(ctx: BenchContext) -> dict:
    """Feature-plane networks: matmul rates at the width of the U-Net's widest layer (``unet_base`` *
    2^(``unet_levels`` - 1)) in float32 and bfloat16 (and float16 on a GPU), the rates its convolutions can reach in
    the precision they run in -> {dtype name: matmul_rate result}; {} for a global network."""
    c = ctx.model.config
    if c.kind != "local":
        return {}
    width = c.unet_base * 2 ** (c.unet_levels - 1)
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if ctx.device.startswith("cuda") else [])
    return {str(d).replace("torch.", ""): matmul_rate(width, ctx.sizes.matmul_batch, ctx.repeats, d, ctx=ctx)
            for d in dtypes}


def run(ctx: BenchContext) -> dict:
    """Measure the rates; sets ``ctx.rate_gflops`` (float32 matmul at the decoder's size) and
    ``ctx.unet_rate_gflops`` (:func:`unet_rates`)."""
    s = ctx.sizes
    h = ctx.model.config.decoder_hidden
    f32 = matmul_rate(h, s.matmul_batch, ctx.repeats, ctx=ctx)
    ctx.rate_gflops = f32["gflops"]
    bf16 = matmul_rate(h, s.matmul_batch, ctx.repeats, torch.bfloat16, ctx=ctx)
    unet = unet_rates(ctx)
    ctx.unet_rate_gflops = {k: r["gflops"] for k, r in unet.items()}
    chunks = [decoder_rate(ctx, c, s.decoder_points) for c in s.chunk_sizes]
    best = max(chunks, key=lambda r: r["points_per_s"])
    # the unfused CBN path exists only for the global kind (the local decoder has no folded form)
    reference = (decoder_rate(ctx, best["chunk"], s.decoder_points, fuse=False)
                 if ctx.model.config.kind == "global" else None)
    low = decoder_rate(ctx, best["chunk"], s.decoder_points, dtype=torch.bfloat16)
    return {
        "device": ctx.device,
        "matmul_float32": f32,
        "matmul_bfloat16": bf16,
        "matmul_unet": unet,
        "decoder_flops_per_query": ctx.costs["decoder_flops_per_query"],
        "encoder_flops_per_input_point": ctx.costs["encoder_flops_per_input_point"],
        "encoder_inference_flops_per_input_point": ctx.costs["encoder_inference_flops_per_input_point"],
        "decoder_floor_points_per_s": 1.0 / ctx.decoder_floor_s(1),
        "decoder_by_chunk": chunks,
        "best_chunk": best["chunk"],
        "decoder_unfused_reference": reference,
        "decoder_bfloat16": low,
        "bfloat16_error": precision_error(ctx, torch.bfloat16, min(65536, s.decoder_points)),
        "efficiency_vs_floor": best["points_per_s"] / (1.0 / ctx.decoder_floor_s(1)),
    }
