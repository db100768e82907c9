#!/usr/bin/env bash
# Prepares, on a machine with the project installed (make install) and pip access, what the GPU check takes to a lent
# GPU machine that has python3 3.12 with CUDA torch, numpy, scipy and scikit-image but no network and no open3d
# (docs/DEVELOPING.md, "The GPU check"):
#   .whl/  the other pure-network packages as Python 3.12 wheels (trimesh, rtree, pykdtree, fast-simplification)
#   .gpu/  the benchmark's test objects, rendered here with open3d (occnet_bench --save-views), quick and full sizes
# Both folders are ignored by git and travel with the device call's `carry`. Takes 3-5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
test -x "$PY" || { echo "gpu_prepare: $PY missing: run make install first" >&2; exit 2; }
rm -rf .whl .gpu && mkdir -p .whl .gpu out
"$PY" -m pip download --quiet --progress-bar off --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    "trimesh==$("$PY" -c 'import trimesh; print(trimesh.__version__)')" rtree pykdtree==1.4.3 fast-simplification
SECTIONS="mise latency queries"
"$PY" -m occnet_ros.cli.bench --quick --repeats 1 --sections $SECTIONS --out out/gpu_prepare_quick \
    --save-views .gpu/views_quick.pkl > out/gpu_prepare_quick.log 2>&1
"$PY" -m occnet_ros.cli.bench --repeats 1 --sections $SECTIONS --out out/gpu_prepare \
    --save-views .gpu/views.pkl > out/gpu_prepare.log 2>&1
du -sh .whl .gpu
echo "gpu_prepare: ready; on the GPU machine run tools/gpu_check.sh with carry [.whl, .gpu]"
