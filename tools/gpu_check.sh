#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine (python3 with CUDA torch, no network, no open3d) from the repository root,
# after tools/gpu_prepare.sh here; the device call carries .whl and .gpu (docs/DEVELOPING.md, "The GPU check"):
#   1. the CUDA tests (test/test_cuda_path.py): the same reconstructions and answers on the GPU as on the CPU;
#   2. occnet_bench --device cuda on the prepared test objects, sections mise, latency and queries (the ros, frame and
#      map sections need rclpy, which that machine lacks; they report it);
#   3. the same sections with the network on that machine's CPU, for the figures beside the GPU's.
# Writes into $OUT (the device tool's folder; out/gpu_check elsewhere): gpu.txt, cuda_tests.log, bench_cuda/results.*,
# bench_cpu/results.*. Exit code: the CUDA tests' (the benchmarks' failures are in their results).
set -uo pipefail
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/occnet_site \
    .whl/*.whl || { echo "gpu_check: could not install the carried wheels (.whl: run tools/gpu_prepare.sh)" >&2; exit 2; }
export PYTHONPATH="/tmp/occnet_site:$PWD" PYTHONUNBUFFERED=1 OCCNET_BENCH_VIEWS="$PWD/.gpu/views_quick.pkl"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c \
    'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'; } \
    > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
python3 -m pytest test/test_cuda_path.py -v -rs -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.log"
tests=${PIPESTATUS[0]}
for device in cuda cpu; do
    timeout 240 python3 -m occnet_ros.cli.bench --device "$device" --views .gpu/views.pkl \
        --sections mise latency queries --out "$OUT/bench_$device" > "$OUT/bench_$device.log" 2>&1
    echo "gpu_check: bench on $device exit $?"
    grep -E "PASS|MISS|NOT MEASURED" "$OUT/bench_$device/results.md" | cut -c1-160
done
# 8 files in all: the most the device tool brings back
exit "$tests"
