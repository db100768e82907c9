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


def test_every_command_has_a_workspace_executable_and_the_same_entry_point():
    """setup.py's console scripts (pip route) and scripts/ (installed to lib/occnet_ros by CMakeLists.txt for
    `ros2 run`) name the same commands and call the same main(); each script guards main() so that a
    spawned worker process (occnet_ros.perception.decimation_worker) that re-imports it does not run the command."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    commands = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMMANDS")
    scripts = {p.name: p.read_text() for p in (REPO / "scripts").iterdir() if p.is_file()}
    assert set(scripts) == set(commands)
    for name, target in commands.items():
        module, func = target.split(":")
        text = scripts[name]
        assert f"from {module} import {func}" in text, name
        assert 'if __name__ == "__main__":' in text and text.index('if __name__ == "__main__":') < text.index(
            f"sys.exit({func}())"), name
