"""lbedge installed like real software: the wheel and sdist the project builds, installed into a fresh virtual
environment (not editable, only the extras the README names for the demo), run from a folder outside the clone;
and the Jetson extra resolving for aarch64 without an OpenCV or torch wheel. The container recipes install the
same wheel with the same extras (checked against the Dockerfiles' text)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
TORCH = "torch==2.13.0"  # the pinned CPU build (the Makefile's; an unpinned torch pulls a CUDA build)


def sh(*cmd, cwd=None, env=None, timeout=900) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    sh(sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", out, ROOT, timeout=600)
    return out


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob("lbedge-*.whl")
    return wheel


def test_wheel_and_sdist_carry_lb_mini_and_the_typed_marker(dist):
    names = set(zipfile.ZipFile(wheel_of(dist)).namelist())
    for modality in ("image", "depth", "thermal", "audio"):
        assert f"lbedge/lbmini/bundles/{modality}/manifest.json" in names
        assert f"lbedge/lbmini/bundles/{modality}/vision.int8.onnx" in names
        assert f"lbedge/lbmini/bundles/student/{modality}/manifest.json" in names
    assert "lbedge/py.typed" in names and "lbedge/quantize/tensorrt_ops.json" in names
    assert "lbedge/web.html" in names  # the web view's page (lbedge demo --web)
    assert not [n for n in names if n.startswith("lbedge/lbmini/bundles/text/")]  # built on first use
    size = wheel_of(dist).stat().st_size
    assert size < 40 * 2**20, f"wheel of {size / 2**20:.1f} MiB"
    (sdist,) = dist.glob("lbedge-*.tar.gz")
    import tarfile

    members = tarfile.open(sdist).getnames()
    assert any(m.endswith("lbmini/bundles/image/vision.int8.onnx") for m in members)
    assert any(m.endswith("docker/Dockerfile.jetson") for m in members)


def test_jetson_extra_resolves_for_aarch64_without_opencv_or_torch(dist, tmp_path):
    """`pip install lbedge[jetson]` on JetPack 6 (Python 3.10, aarch64): the torch-free runtime, nothing that
    would shadow JetPack's OpenCV."""
    report = tmp_path / "report.json"
    # JetPack 6 is Ubuntu 22.04 (glibc 2.35): every manylinux tag up to 2_35 installs there
    platforms = [f"--platform=manylinux_2_{v}_aarch64" for v in (17, 27, 28, 31, 34, 35)]
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", report]
    sh(
        *pip,
        *platforms,
        "--python-version",
        "3.10",
        "--only-binary=:all:",
        "--target",
        tmp_path / "t",
        f"{wheel_of(dist)}[jetson]",
        timeout=600,
    )
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"lbedge", "numpy", "tokenizers", "onnxruntime", "cuda-python"} <= names
    assert not [n for n in names if "opencv" in n or n == "torch" or n.startswith("nvidia-")], names
    cuda = next(i for i in json.loads(report.read_text())["install"] if i["metadata"]["name"] == "cuda-python")
    assert cuda["metadata"]["version"].startswith("12.")  # not 13.x on a CUDA 12 Jetson


def test_dockerfiles_install_this_wheel_with_named_extras():
    cpu = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    jetson = (ROOT / "docker" / "Dockerfile.jetson").read_text()
    assert "FROM nvcr.io/nvidia/l4t-jetpack" in jetson and "--system-site-packages" in jetson
    assert re.search(r"lbedge-\*\.whl\)\[\$\{EXTRAS\}\]", cpu) and re.search(r"ARG EXTRAS=cpu", cpu)
    assert re.search(r"ARG EXTRAS=jetson", jetson) and "cuda-python==12.6" in jetson
    extras = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"cpu", "jetson", "lbmini"} <= set(extras)


def test_wheel_runs_the_demo_and_eval_outside_the_clone(dist, tmp_path):
    """From the built wheel in a fresh venv, in a folder outside the clone: `lbedge demo --lb-mini --headless`
    and `lbedge eval` work, and importing lbedge imports no torch."""
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(LBEDGE_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
    sh(py, "-m", "pip", "install", "--quiet", TORCH, env=env)
    sh(py, "-m", "pip", "install", "--quiet", f"{wheel_of(dist)}[lbmini]", TORCH, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = sh(
        py, "-c", "import lbedge, sys; print(lbedge.__file__); print('torch' in sys.modules)", cwd=work, env=env
    ).stdout.split()
    assert str(venv) in out[0] and out[1] == "False"  # the installed copy, no torch
    demo = sh(
        venv / "bin" / "lbedge", "demo", "--lb-mini", "--headless", "--scenes", "2", cwd=work, env=env, timeout=900
    )
    assert "scene 2" in demo.stdout and "fused" in demo.stdout, demo.stdout
    assert list((work / "out").glob("lb-mini-demo.*")), list(work.rglob("*"))[:20]
    ev = sh(
        venv / "bin" / "lbedge",
        "eval",
        "--scenes",
        "10",
        "--precision",
        "int8",
        "--json",
        cwd=work,
        env=env,
        timeout=900,
    )
    rows = json.loads(ev.stdout)
    assert {r["modality"] for r in rows} == {"image", "depth", "thermal", "audio"}
    assert all(r["top1"] > r["chance"] for r in rows if r["modality"] != "image")
