"""Prove the ROS 2 workspace route: colcon-build a copy of this repo against the pip-installed ROS 2.

Copies the tracked files (or, outside git, the source tree without build products) to
``<tmp>/ws/src/occnet_ros``, runs ``colcon build`` there, sources ``install/setup.bash`` in a fresh bash and
imports the interfaces and the Python package from the install space. Exit code 0 when all of that works.

Usage: .venv/bin/python tools/colcon_check.py [--keep]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = {".venv", "build", "install", "log", "out", ".git", "__pycache__", ".pytest_cache", "data_cache", "runs"}

CHECK = r"""
import occnet_ros, occnet_ros.srv, occnet_ros.msg, occnet_ros.reconstruction.normalization
from occnet_ros.srv import QueryOccupancy
from occnet_ros.msg import ReconstructedObjectArray
install = r"{install}"
assert occnet_ros.__file__.startswith(install), occnet_ros.__file__
assert occnet_ros.srv.__file__.startswith(install), occnet_ros.srv.__file__
assert occnet_ros.reconstruction.normalization.__file__.startswith(install), occnet_ros.reconstruction.normalization.__file__
import rclpy
rclpy.init()
node = rclpy.create_node("colcon_check")
node.create_service(QueryOccupancy, "q", lambda req, res: res)
node.create_publisher(ReconstructedObjectArray, "objects", 1)
node.destroy_node()
rclpy.shutdown()
print("install space OK")
"""


def copy_sources(dst: Path) -> None:
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
        names = [n for n in files.decode().split("\0") if n]
    except (subprocess.CalledProcessError, FileNotFoundError):
        names = []
    if names:
        for name in names:
            src = REPO / name
            if src.is_file():
                (dst / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst / name)
    else:
        shutil.copytree(REPO, dst, ignore=lambda d, entries: [e for e in entries if e in SKIP])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = ap.parse_args()
    venv = Path(sys.prefix)
    ws = Path(tempfile.mkdtemp(prefix="occnet_colcon_"))
    try:
        copy_sources(ws / "src" / "occnet_ros")
        env = dict(os.environ)
        env["AMENT_PREFIX_PATH"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
        build = subprocess.run(
            [str(venv / "bin" / "colcon"), "build", "--event-handlers", "console_cohesion-",
             "--cmake-args", f"-DPython3_EXECUTABLE={venv / 'bin' / 'python'}", "-DBUILD_TESTING=OFF"],
            cwd=ws, env=env, capture_output=True, text=True)
        if build.returncode != 0:
            print(build.stdout[-4000:], build.stderr[-4000:], sep="\n")
            print("colcon build FAILED", file=sys.stderr)
            return 1
        install = ws / "install" / "occnet_ros"
        script = CHECK.replace("{install}", str(install))
        check = subprocess.run(
            ["bash", "-c", f'source "{ws}/install/setup.bash" && cd /tmp && "{venv}/bin/python" -c "$CHECK"'],
            env={**env, "CHECK": script}, capture_output=True, text=True)
        print(check.stdout, check.stderr[-3000:], sep="\n")
        if check.returncode != 0:
            print("import from the install space FAILED", file=sys.stderr)
            return 1
        for exe in ("reconstruction_node", "sim_camera", "occnet_launch"):
            if not (install / "lib" / "occnet_ros" / exe).exists():
                print(f"missing executable lib/occnet_ros/{exe}", file=sys.stderr)
                return 1
        print(f"colcon route OK ({ws})")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
