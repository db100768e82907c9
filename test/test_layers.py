"""The layers of the package (docs/DEVELOPING.md): pure code imports no ROS, and a lower layer never imports
a higher one. Read from the source files' import statements, so a new import that breaks a layer fails here."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "occnet_ros"
RANK = {"geometry": 0, "neighbours": 0, "config_io": 0, "process_memory": 0, "blas_threads": 0, "worker_process": 0, "network": 1, "reconstruction": 2, "perception": 3, "data": 4, "training": 4,
        "evaluation": 4, "bag": 4, "viewer": 4, "ros": 5, "cli": 6, "benchmark": 6, "demo": 6, "sim": 6, "replay": 6}
"""Layer of each top-level module or subpackage: a module may import its own layer and those below."""
ROS_MODULES = {"rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "geometry_msgs", "visualization_msgs",
               "shape_msgs", "builtin_interfaces", "tf2_ros", "launch", "launch_ros"}
PURE = [p for p in sorted(PACKAGE.rglob("*.py"))
        if RANK.get(p.relative_to(PACKAGE).parts[0].removesuffix(".py"), 9) <= 4]


def imported(path: Path) -> set[str]:
    """Every module name an import statement of ``path`` names (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "occnet_ros" or len(parts) < 2:
        return None
    return RANK.get(parts[1])


def test_every_module_has_a_layer():
    for p in PACKAGE.rglob("*.py"):
        top = p.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert top == "__init__" or top in RANK, f"{p}: add its layer to RANK and docs/DEVELOPING.md"


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_code_imports_no_ros_and_no_higher_layer(path):
    own = RANK[path.relative_to(PACKAGE).parts[0].removesuffix(".py")]
    for name in imported(path):
        assert name.split(".")[0] not in ROS_MODULES, f"{path.name} imports {name}"
        assert name not in ("occnet_ros.msg", "occnet_ros.srv"), f"{path.name} imports the ROS interfaces"
        other = layer(name)
        assert other is None or other <= own, f"{path.name} (layer {own}) imports {name} (layer {other})"
