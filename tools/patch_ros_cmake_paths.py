"""Point the PyPI ROS 2 wheels' CMake export files at this venv (see README, "pip route").

The wheels were built in a manylinux container; their CMake files name its Python include and site-packages
folders, which do not exist here, and CMake refuses such imported targets. Rewrites those two paths in the
venv's share/ folder (only *.cmake files), once; re-running changes nothing.

Usage: <venv>/bin/python tools/patch_ros_cmake_paths.py
"""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

BUILD_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
BUILD_SITE = "/opt/python/cp311-cp311/lib/python3.11/site-packages"


def main() -> int:
    prefix = Path(sys.prefix)
    include = sysconfig.get_paths()["include"]
    site = sysconfig.get_paths()["purelib"]
    if not Path(include, "Python.h").exists():
        print(f"error: Python headers not found at {include} (install python3-dev)", file=sys.stderr)
        return 1
    changed = 0
    for f in (prefix / "share").rglob("*.cmake"):
        text = f.read_text(errors="surrogateescape")
        if BUILD_INCLUDE not in text and BUILD_SITE not in text:
            continue
        f.write_text(text.replace(BUILD_INCLUDE, include).replace(BUILD_SITE, site), errors="surrogateescape")
        changed += 1
    print(f"patched {changed} CMake files under {prefix / 'share'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
