# occnet_ros, pip route: everything installs into .venv/ at the repo root.
#   make test    install what is missing, build the interfaces, run the whole test suite
#   make demo    simulated RGB-D camera + reconstruction node, results in out/demo/ (VIEWER=1: live view in a browser)
#   make browser headless Chromium for the viewer's browser test (apt-get, as root)
#   make bench   speed benchmarks, results in out/bench/
#   make soak    the node under a steady load for 10 minutes (SOAK_MINUTES), results in out/soak/
# Re-running is incremental: each step leaves a stamp in .venv/ and runs again only when its inputs change.

PYTHON_SYS ?= python3
VENV       := $(CURDIR)/.venv
PY         := $(VENV)/bin/python
SITE        = $(shell $(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
IFACE_DIR  := $(VENV)/lib/occnet_ros_interfaces
BUILD_DIR  := $(CURDIR)/build/interfaces
export AMENT_PREFIX_PATH := $(VENV)
PYTEST_ARGS ?=

STAMP_DEPS    := $(VENV)/.stamp-deps
STAMP_IFACE   := $(VENV)/.stamp-interfaces
STAMP_DEVELOP := $(VENV)/.stamp-develop
INTERFACES    := $(wildcard msg/*.msg) $(wildcard srv/*.srv)

.PHONY: all install test test-fast demo browser bench gpu-check soak train eval figures colcon-build clean distclean

all: install

install: $(STAMP_DEVELOP) $(STAMP_IFACE)

$(STAMP_DEPS): requirements.txt tools/ensure_system_deps.sh tools/patch_ros_cmake_paths.py
	tools/ensure_system_deps.sh
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) tools/patch_ros_cmake_paths.py
	touch $@

# The generated interfaces (occnet_ros.msg / occnet_ros.srv) go to their own folder, joined to the
# hand-written package by pkgutil.extend_path (occnet_ros/__init__.py). The egg-info that ament writes
# there is removed, or pip would take it for a second copy of occnet_ros.
$(STAMP_IFACE): $(STAMP_DEPS) $(INTERFACES) CMakeLists.txt package.xml
	mkdir -p $(BUILD_DIR)
	cmake -S . -B $(BUILD_DIR) -DOCCNET_INTERFACES_ONLY=ON -DBUILD_TESTING=OFF \
	  -DCMAKE_PREFIX_PATH=$(VENV) -DPython3_EXECUTABLE=$(PY) -DCMAKE_INSTALL_PREFIX=$(VENV) \
	  -DPYTHON_INSTALL_DIR=lib/occnet_ros_interfaces > $(BUILD_DIR).log 2>&1 || (cat $(BUILD_DIR).log; exit 1)
	cmake --build $(BUILD_DIR) -j2 >> $(BUILD_DIR).log 2>&1 || (tail -50 $(BUILD_DIR).log; exit 1)
	cmake --install $(BUILD_DIR) >> $(BUILD_DIR).log 2>&1 || (tail -50 $(BUILD_DIR).log; exit 1)
	rm -rf $(IFACE_DIR)/occnet_ros-*.egg-info
	echo "$(IFACE_DIR)" > $(SITE)/occnet_ros_interfaces.pth
	touch $@

$(STAMP_DEVELOP): $(STAMP_DEPS) setup.py
	rm -rf $(IFACE_DIR)/occnet_ros-*.egg-info
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	touch $@

test: install
	$(PY) -m pytest test/ $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest test/ -m "not slow" $(PYTEST_ARGS)

# VIEWER=1: also a live 3D view in a web browser (viewer_node; the address is printed). RECORD=DIR: the camera also
# records what it publishes into that new rosbag2 (MCAP) folder, for occnet_replay.
demo: install
	$(VENV)/bin/occnet_demo --out out/demo $(if $(VIEWER),--viewer) $(if $(RECORD),--record $(RECORD))

# Headless Chromium for the viewer's browser test (test/test_viewer_browser.py skips without it): Debian's
# package, installed where apt-get exists and we are root.
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "make browser: needs apt-get and root; install Chromium with your package manager" >&2; exit 1; fi

bench: install
	$(VENV)/bin/occnet_bench --out out/bench

# On a machine with an NVIDIA GPU, in one go: the CUDA tests (same answers as the CPU), then the benchmark with the
# network on the GPU; results in out/bench_cuda/ (a machine without CUDA: the tests skip, the bench exits 2).
gpu-check: install
	$(VENV)/bin/python -m pytest test/test_cuda_path.py -v -rs -p no:cacheprovider
	$(VENV)/bin/occnet_bench --device cuda --out out/bench_cuda

# Soak test: sim_camera + reconstruction_node (shipped weights) under a steady load for SOAK_MINUTES, node memory,
# fds, threads, frames and query latencies per minute, PASS/MISS lines; results in out/soak/.
SOAK_MINUTES ?= 10
soak: install
	$(VENV)/bin/occnet_soak --minutes $(SOAK_MINUTES) --out out/soak

# Fine-tunes the shipped network: config/train/finetune.yaml starts from occnet_ros/weights/occnet_default.pt with
# stage 6's data and schedule (config/train/household.yaml; lr 1e-4, cosine) and a fresh optimiser, into runs/finetune.
# The first run generates the training data into data_cache/ unless it is there (about 50 minutes on 2 cores). TRAIN_MINUTES is the
# total wall-time budget, counted across resumes: `make train` again resumes runs/finetune (delete the folder to
# start over), and the cosine schedule follows the budget, so a larger budget on a resume raises the learning rate
# again. Regenerating the shipped weights from scratch instead: occnet_ros/weights/README.md.
# Export, calibrate (1 view, then 2 and 4 fused views), compare with the shipped file on held-out objects:
#   .venv/bin/occnet_train --export runs/finetune/best.pt runs/finetune/occnet_finetune.pt
#   .venv/bin/occnet_train --config config/train/finetune.yaml --calibrate runs/finetune/occnet_finetune.pt --calibration-views 1 2 4
#   .venv/bin/occnet_heldout --variant shipped --variant new:weights=runs/finetune/occnet_finetune.pt --views 1 4 --groups household
TRAIN_MINUTES ?= 70
train: install
	$(VENV)/bin/occnet_train --config config/train/finetune.yaml --max-minutes $(TRAIN_MINUTES) \
	  $$(test -f runs/finetune/last.pt && echo --resume)

# make eval: the evaluation objects against the baselines (out/eval/), the held-out shapes of every household family
# and the held-out meshes and shapes at 1 and 4 views (out/eval/heldout/), and the probability calibration
# (out/eval/calibration/); each writes markdown, JSON and PNGs. EVAL_WEIGHTS picks another weights file.
EVAL_WEIGHTS ?= occnet_ros/weights/occnet_default.pt
eval: install
	$(VENV)/bin/occnet_eval --weights $(EVAL_WEIGHTS) --out out/eval
	$(VENV)/bin/occnet_heldout --variant weights:weights=$(EVAL_WEIGHTS) --objects 32 24 --groups household \
	  --per-group 8 --views 1 4 --render --out out/eval/heldout
	$(VENV)/bin/occnet_calibrate $(EVAL_WEIGHTS) --report-only --out out/eval/calibration

# Regenerates the pictures committed for the README.
figures: install
	$(VENV)/bin/occnet_demo --out out/demo
	mkdir -p docs/img && cp out/demo/overview.png docs/img/demo_overview.png && cp out/demo/map_views.png docs/img/map_views.png

# The ROS 2 workspace route, against the pip-installed ROS 2: a colcon build of a copy of this repo.
colcon-build: install
	$(PY) tools/colcon_check.py

clean:
	rm -rf build out .pytest_cache

distclean: clean
	rm -rf $(VENV)
