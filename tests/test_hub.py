"""lbedge.hub: name resolution, and a clear failure when the hub cannot be reached."""

import pytest

from lbedge.hub import OFFICIAL, DownloadError, download, resolve


def test_resolve_names():
    assert resolve("thermal") == "LanguageBind/LanguageBind_Thermal"
    assert resolve("LanguageBind_Audio_FT") == "LanguageBind/LanguageBind_Audio_FT"
    assert resolve("LanguageBind/LanguageBind_Video_Huge_V1.5_FT") == OFFICIAL["video_huge_v1.5_ft"]
    with pytest.raises(DownloadError, match="unknown checkpoint"):
        resolve("nonsense")


def test_offline_download_fails_clearly(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DownloadError, match="could not download LanguageBind/LanguageBind_Thermal"):
        download("thermal", tmp_path / "out")


def test_cli_download_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    from click.testing import CliRunner

    from lbedge.cli import main

    r = CliRunner().invoke(
        main,
        ["download", "depth", "-o", str(tmp_path / "d")],
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert r.exit_code == 1 and r.output.splitlines()[-1].startswith("error: could not download")
