"""``pip install .`` and ``pip install -e .`` both give the four import paths from the four folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# every folder of Python code under lbedge/ is a subpackage, plus the three mapped top-level folders
PACKAGES = tuple(
    sorted(
        {"lbedge", "lbedge.sensors", "lbedge.quantize", "lbedge.train"}
        | {
            "lbedge." + ".".join(p.parent.relative_to(ROOT / "lbedge").parts)
            for p in (ROOT / "lbedge").rglob("*.py")
            if p.parent != ROOT / "lbedge"
        }
    )
)


def test_regular_install_into_a_target(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    for pkg in PACKAGES:
        assert (target / Path(*pkg.split(".")) / "__init__.py").is_file(), pkg
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import importlib; "
        f"[importlib.import_module(p) for p in {PACKAGES!r}]; import lbedge; print(lbedge.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(target)], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout
    assert out.strip().startswith(str(target))
    assert list((target / "bin").glob("lbedge")), "console script missing"


def test_development_install_maps_the_top_level_folders():
    """The test environment is an editable install (make test): each import path is its folder."""
    import importlib

    for pkg, folder in (
        ("lbedge.sensors", "sensors"),
        ("lbedge.quantize", "quantize"),
        ("lbedge.train", "train"),
        ("lbedge", "lbedge"),
    ):
        mod = importlib.import_module(pkg)
        assert Path(mod.__file__).resolve().parent == (ROOT / folder).resolve()
