"""The device runtime stays torch-free: importing lbedge and running its CLI help loads no torch."""

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def test_import_lbedge_does_not_import_torch():
    mods = _modules_after("import lbedge, lbedge.preprocess, lbedge.zeroshot, lbedge.tokenizer, lbedge.encoder")
    assert "lbedge" in mods
    assert "torch" not in mods


def test_cli_help_does_not_import_torch():
    mods = _modules_after(
        "from click.testing import CliRunner\nfrom lbedge.cli import main\n"
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output"
    )
    assert "torch" not in mods


def test_from_pretrained_imports_torch_lazily():
    mods = _modules_after("import lbedge\nassert callable(lbedge.from_pretrained)")
    assert "torch" not in mods


def test_without_opencv_importing_lbedge_says_where_opencv_comes_from():
    """lbedge depends on no OpenCV wheel (it would shadow JetPack's): without any cv2, one clear message."""
    code = (
        "import sys\nsys.modules['cv2'] = None\n"
        "try:\n    import lbedge\nexcept ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.startswith("MissingDependency") and "lbedge[opencv]" in out and "system-site-packages" in out
