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
