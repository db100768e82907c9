"""The ROS 2 workspace route: `colcon build` of this repo against the pip-installed ROS 2 wheels, then the
interfaces, the Python package and the executables are used from the install space (tools/colcon_check.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_colcon_build_and_install_space_imports():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "colcon_check.py")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "install space OK" in proc.stdout
    assert "colcon route OK" in proc.stdout
