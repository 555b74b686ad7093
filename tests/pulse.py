"""A virtual microphone for tests on machines without a sound card: a private PulseAudio daemon.

The daemon has one null sink ``vsink`` (48 kHz mono, ``norewinds=1``: without it short playbacks are cut or
corrupted); its monitor ``vsink.monitor`` is the default source, so whatever ``paplay --device=vsink`` plays is
what a recording from the ALSA device ``pulse`` (PortAudio -> ALSA -> pulse plugin) hears. No kernel module,
``/dev/snd`` or D-Bus is needed and root is fine.

Usage::

    with virtual_microphone(tmp_path) as mic:
        player = mic.play(wav_path)          # paplay in the background
        ...record from Microphone(device="pulse")...

Skips (pytest) when a piece is missing and names the Debian package: pulseaudio, pulseaudio-utils (pactl,
paplay), libasound2-plugins (the ALSA pulse plugin), libportaudio2; or ``pip install "lbedge[audio]"``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

_ENV_KEYS = ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "XDG_RUNTIME_DIR", "PULSE_SINK", "PULSE_SOURCE")


def missing_pieces() -> str | None:
    """Why a virtual microphone cannot be made here (a message naming what to install), or None."""
    need = {"pulseaudio": "pulseaudio", "pactl": "pulseaudio-utils", "paplay": "pulseaudio-utils"}
    missing = sorted({pkg for binary, pkg in need.items() if shutil.which(binary) is None})
    if (
        not glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so")
        + glob.glob("/usr/lib/alsa-lib/libasound_module_pcm_pulse.so")
        + glob.glob("/usr/lib64/alsa-lib/libasound_module_pcm_pulse.so")
    ):
        missing.append("libasound2-plugins")
    try:
        import sounddevice  # noqa: F401
    except OSError:
        missing.append("libportaudio2")
    except ImportError:
        return 'sounddevice is not installed: pip install "lbedge[audio]"'
    if missing:
        return "virtual microphone needs Debian packages: apt-get install " + " ".join(missing)
    return None


def reinit_portaudio() -> None:
    """Make PortAudio rescan its devices (sounddevice scans once at import)."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


class VirtualMicrophone:
    """A running private PulseAudio daemon: play into it, freeze it, or kill it."""

    def __init__(self, root: Path, proc: subprocess.Popen, server: str):
        self.root, self.proc, self.server = root, proc, server
        self.players: list[subprocess.Popen] = []

    def play(self, wav: str | os.PathLike, wait: bool = False) -> subprocess.Popen:
        """Play a WAV into the null sink (what the virtual microphone hears)."""
        p = subprocess.Popen(["paplay", "--device=vsink", str(wav)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.players.append(p)
        if wait:
            p.wait(timeout=60)
        return p

    def pactl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=5)

    def freeze(self) -> None:
        """SIGSTOP the daemon: its clients get no more data but their connections stay open."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the daemon (an unplugged device, from the client's point of view)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)

    @property
    def log(self) -> str:
        path = self.root / "pulseaudio.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def virtual_microphone(
    tmpdir: str | os.PathLike, *, rate: int = 48000, channels: int = 1, ready_timeout: float = 10.0, reinit: bool = True
) -> Iterator[VirtualMicrophone]:
    """Start a private PulseAudio daemon in ``tmpdir``, point this process at it, and tear it all down after.

    ``reinit``: make PortAudio rescan its devices once the daemon runs (and again at the end), so that the
    ALSA device ``pulse`` is listed; ``False`` leaves that to the code under test."""
    why = missing_pieces()
    if why:
        pytest.skip(why)
    root = Path(tmpdir) / "pulse"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    socket = root / "native"
    server = f"unix:{socket}"
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    daemon_env = dict(os.environ, XDG_RUNTIME_DIR=str(root), PULSE_RUNTIME_PATH=str(root), HOME=str(root))
    daemon_env.pop("PULSE_SERVER", None)
    cmd = [
        "pulseaudio",
        "-n",
        "--daemonize=no",
        "--exit-idle-time=-1",
        "--disable-shm=yes",
        "--use-pid-file=no",
        "--system=no",
        "--log-target=stderr",
        "-L",
        f"module-native-protocol-unix auth-anonymous=1 socket={socket}",
        "-L",
        f"module-null-sink sink_name=vsink rate={rate} channels={channels} norewinds=1",
        "-L",
        "module-always-sink",
    ]
    log = open(root / "pulseaudio.log", "wb")
    proc = subprocess.Popen(cmd, env=daemon_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    mic = VirtualMicrophone(root, proc, server)
    try:
        os.environ.update(PULSE_SERVER=server, PULSE_RUNTIME_PATH=str(root), XDG_RUNTIME_DIR=str(root))
        for key in ("PULSE_SINK", "PULSE_SOURCE"):
            os.environ.pop(key, None)
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {proc.returncode}:\n{mic.log[-2000:]}")
            try:
                if mic.pactl("info").returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio not ready after {ready_timeout:g} s:\n{mic.log[-2000:]}")
            time.sleep(0.05)
        for args in (("set-default-sink", "vsink"), ("set-default-source", "vsink.monitor")):
            r = mic.pactl(*args)
            if r.returncode != 0:
                raise RuntimeError(f"pactl {' '.join(args)} failed: {r.stderr}")
        if reinit:
            reinit_portaudio()
        yield mic
    finally:
        for p in mic.players:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        mic.kill()
        log.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if reinit:
            with contextlib.suppress(Exception):
                reinit_portaudio()  # forget the daemon's "pulse" device
