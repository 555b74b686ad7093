"""The shape of the code, kept true by reading the imports (ast, no execution): stages import one way, no stage
imports an application or another stage's private names, and the torch-free runtime stays torch-free.

Packages (import path: folder): ``lbedge`` runtime (``lbedge/``, without the CLI and the demo application
glue), ``lbedge.sensors`` (``sensors/``), ``lbedge.quantize`` (``quantize/``), ``lbedge.train`` (``train/``), and
the applications ``lbedge.lbmini`` (``lbmini/``) and ``lbedge.ros2`` (``ros2/``, with its ament package under
``ros2/package/``). The rules are written down in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

FOLDERS = {
    "lbedge": ROOT / "lbedge",
    "lbedge.sensors": ROOT / "sensors",
    "lbedge.quantize": ROOT / "quantize",
    "lbedge.train": ROOT / "train",
    "lbedge.lbmini": ROOT / "lbmini",
    "lbedge.ros2": ROOT / "ros2",
}
#: runtime modules that are applications wiring every stage together: the command line
APP_MODULES = ("lbedge.cli",)
STAGES = ("lbedge.sensors", "lbedge.quantize", "lbedge.train")
APPS = ("lbedge.lbmini", "lbedge.ros2")
#: what sensors may use of the runtime: the frame/source contract, errors, limits, optional imports and the
#: model-free signal processing (image decoding with its limits, the audio resampler)
SENSORS_MAY_USE = ("lbedge.frames", "lbedge.errors", "lbedge.limits", "lbedge.deps", "lbedge.preprocess")


def module_name(path: Path) -> str:
    for package, folder in FOLDERS.items():
        if path.is_relative_to(folder):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            return ".".join([package, *parts])
    raise AssertionError(path)


def modules() -> dict[str, Path]:
    found = {}
    for folder in FOLDERS.values():
        for path in folder.rglob("*.py"):
            found[module_name(path)] = path
    return found


def package_of(name: str) -> str:
    for package in sorted(FOLDERS, key=len, reverse=True):
        if name == package or name.startswith(package + "."):
            return package
    return ""


def imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) of every import in the module, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            out.append((target, names, node.lineno))
            out += [(f"{target}.{n}", [], node.lineno) for n in names]  # `from lbedge import lbmini`
    return out


def violations(rule) -> list[str]:
    bad = []
    for name, path in sorted(modules().items()):
        for target, names, line in imports(name, path):
            why = rule(name, target, names)
            if why:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name} imports {target}: {why}")
    return bad


def test_modules_are_found():
    mods = modules()
    assert "lbedge.pipeline" in mods and "lbedge.sensors.realsense" in mods and "lbedge.lbmini.world" in mods
    assert "lbedge.quantize.tensorrt_build" in mods and "lbedge.train.bind" in mods
    assert "lbedge.ros2.core" in mods and "lbedge.sensors.rosbag" in mods


def test_no_library_package_imports_an_application():
    def rule(name, target, names):
        if package_of(name) in APPS or name.startswith(APP_MODULES):
            return None
        if package_of(target) in APPS:
            return "a library package must not import an application (lb-mini, ROS 2)"

    assert violations(rule) == []


def test_stages_import_one_way():
    def rule(name, target, names):
        src, dst = package_of(name), package_of(target)
        if src in APPS or name.startswith(APP_MODULES) or not dst or src == dst:
            return None
        if src == "lbedge" and dst in STAGES:
            return "the runtime core never imports another stage (only the CLI does, lazily)"
        if (
            src == "lbedge.sensors"
            and dst == "lbedge"
            and not target.startswith(SENSORS_MAY_USE)
            and target != "lbedge"
        ):
            return f"sensors use only {', '.join(SENSORS_MAY_USE)} of the runtime"
        if src == "lbedge.sensors" and target == "lbedge":
            return "sensors import the runtime's small modules, not the whole package"
        if src == "lbedge.sensors" and dst in STAGES:
            return "sensors know frames, not models"
        if {src, dst} == {"lbedge.quantize", "lbedge.train"}:
            return "quantize and train do not import each other"

    assert violations(rule) == []


def test_no_private_names_across_packages():
    def rule(name, target, names):
        src, dst = package_of(name), package_of(target)
        if not dst or src == dst:
            return None
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        parts = [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
        if private or parts:
            return f"private name {private or parts} of another package"

    assert violations(rule) == []


@pytest.mark.parametrize(
    "module",
    [
        "lbedge.bundle",
        "lbedge.pipeline",
        "lbedge.web",
        "lbedge.zeroshot",
        "lbedge.encoder",
        "lbedge.preprocess",
        "lbedge.backends.onnxruntime_backend",
        "lbedge.backends.tensorrt_backend",
        "lbedge.sensors.base",
        "lbedge.sensors.rosbag",
        "lbedge.ros2.core",
    ],
)
def test_torch_free_modules_do_not_import_torch_at_the_top(module):
    path = modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + [
        n.module or "" for n in top if isinstance(n, ast.ImportFrom)
    ]
    assert not [n for n in names if n.split(".")[0] in ("torch", "peft")], names


def test_only_the_ros2_node_imports_rclpy():
    """rclpy comes with a ROS 2 installation, never from PyPI: one module (the node's thin shell) imports it, and
    only inside functions; everything else of lbedge.ros2 runs and is tested without ROS."""
    found = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] in ("rclpy", "rcl_interfaces") for n in names):
                found.append(name)
                assert id(node) not in top, f"{name} imports rclpy at its top: import it inside the node's functions"
    assert set(found) == {"lbedge.ros2.node"}, found
