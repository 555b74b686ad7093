"""Microphone capture, recorded for real through a private PulseAudio daemon (tests/pulse.py): no sound card."""

from __future__ import annotations

import importlib.abc
import sys
import time
import wave

import numpy as np
import pytest

from lbedge.errors import MissingDependency, SensorError
from pulse import virtual_microphone

TONE_HZ, TONE_AMP = 1000.0, 0.5


def write_tone(path, seconds: float, rate: int = 48000, freq: float = TONE_HZ, amp: float = TONE_AMP) -> np.ndarray:
    """A cosine (so the first sample is not 0) as 16-bit PCM WAV; returns the samples as float32 in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = np.round(amp * 32767 * np.cos(2 * np.pi * freq * t)).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate), w.writeframes(pcm.tobytes())
    return pcm.astype(np.float32) / 32768.0


@pytest.fixture
def vmic(tmp_path):
    with virtual_microphone(tmp_path) as mic:
        yield mic


def wait_streams_closed(timeout: float = 5.0) -> None:
    from lbedge.sensors import microphone

    deadline = time.monotonic() + timeout
    while microphone._open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert microphone._open_streams == 0


SEQUENCE_HZ = (500.0, 1000.0, 2000.0)


def write_sequence(path, seconds: float, freqs=SEQUENCE_HZ, rate: int = 48000) -> None:
    """Tones one after the other, ``seconds`` each, as 16-bit PCM WAV."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = np.concatenate([np.round(TONE_AMP * 32767 * np.cos(2 * np.pi * f * t)) for f in freqs]).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate), w.writeframes(pcm.tobytes())


def tone_heard(x: np.ndarray, rate: int, freqs=SEQUENCE_HZ) -> float | None:
    """The played tone a window holds and nothing else (99 % of its energy within 5 Hz of it), else None
    (silence, or a window across two tones)."""
    if np.sqrt(np.mean(x**2)) < 0.01:
        return None
    spec = np.abs(np.fft.rfft(x)) ** 2
    bins = np.fft.rfftfreq(x.size, 1 / rate)
    peak = bins[spec.argmax()]
    tone = min(freqs, key=lambda f: abs(f - peak))
    pure = abs(peak - tone) <= 1.0 and spec[np.abs(bins - tone) <= 5].sum() / spec.sum() > 0.99
    return tone if pure else None


def test_records_what_is_played(vmic, tmp_path):
    """Three tones played in turn are heard, each pure and at full amplitude, in the order played. Nothing here
    depends on when windows arrive: a reader slowed by a loaded machine gets later windows, not wrong ones
    (benchmarks/bench_microphone.py measures the arrival gaps)."""
    from lbedge import PreprocessConfig, Preprocessor
    from lbedge.sensors.microphone import Microphone

    write_sequence(tmp_path / "seq.wav", 2.0)
    hop = 0.25
    frames, heard_last = [], False
    with Microphone(device="pulse", window=0.5, hop=hop, target_rate=16000) as mic:
        vmic.play(tmp_path / "seq.wav")
        while len(frames) < 80:  # the sequence lasts 6 s (about 24 windows); read until silence follows it
            frames.append(mic.read())
            x = frames[-1].data[0]
            heard_last = heard_last or tone_heard(x, 16000) == SEQUENCE_HZ[-1]
            if heard_last and not x.any():
                break
    wait_streams_closed()
    assert [f.sequence for f in frames] == list(range(len(frames)))
    for f in frames:
        assert f.data.shape == (1, 8000) and f.data.dtype == np.float32 and f.data.flags.c_contiguous
        assert f.modality == "audio" and f.units == "pcm_float"
        assert f.meta["sample_rate"] == 16000 and f.meta["device"] == "pulse"
        assert f.meta["device_rate"] == 44100  # the ALSA "pulse" device's default rate
        assert isinstance(f.meta["overflows"], int) and isinstance(f.meta["dropped_windows"], int)
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:]))
    # the device clock advances exactly one hop per window (up to the jitter of PortAudio's block timestamps);
    # a reader more than a hop late gets the newest window instead, between its skipped hops and one more
    dts = np.diff([f.device_timestamp for f in frames])
    hops = 1 + np.diff([f.meta["dropped_windows"] for f in frames])
    assert np.all(np.abs(dts[hops == 1] - hop) < 0.03), (dts, hops)
    assert np.all((dts > hops * hop - 0.03) & (dts < (hops + 1) * hop + 0.03)), (dts, hops)
    # what was heard: each tone, pure, in the order played (windows across two tones or silence count as none)
    heard = [tone_heard(f.data[0], 16000) for f in frames]
    spans = {tone: [i for i, h in enumerate(heard) if h == tone] for tone in SEQUENCE_HZ}
    assert all(spans.values()), heard  # every tone
    assert max(spans[500.0]) < min(spans[1000.0]) and max(spans[1000.0]) < min(spans[2000.0]), heard  # in order
    for tone in SEQUENCE_HZ:  # a window wholly inside each tone has its full amplitude
        loudest = max(np.sqrt(np.mean(f.data[0] ** 2)) for f, h in zip(frames, heard) if h == tone)
        assert abs(loudest - TONE_AMP / np.sqrt(2)) < 0.02, (tone, loudest)
    # the frames are valid model input as they are
    f = frames[heard.index(1000.0)]
    assert Preprocessor(PreprocessConfig("audio"))((f.data, f.meta["sample_rate"])).shape == (1, 3, 112, 1036)


def test_native_rate_is_sample_exact(vmic, tmp_path):
    """At the sink's own rate (48 kHz) and target_rate=None the recording is the WAV sample for sample."""
    from lbedge.sensors.microphone import Microphone

    ref = write_tone(tmp_path / "tone.wav", 1.0)
    with Microphone(device="pulse", window=2.0, hop=1.0, sample_rate=48000, target_rate=None) as mic:
        vmic.play(tmp_path / "tone.wav")
        frame = mic.read()
    assert frame.data.shape == (1, 96000) and frame.meta["sample_rate"] == 48000
    x = frame.data[0]
    onset = int(np.flatnonzero(x)[0])
    assert onset + ref.size <= x.size, "the tone did not fit in the first window"
    np.testing.assert_array_equal(x[onset : onset + ref.size], ref)
    assert not x[onset + ref.size :].any() and not x[:onset].any()


def test_silence_when_nothing_plays_and_late_reader(vmic):
    """The null sink's monitor delivers zeros continuously: frames of silence, not a stall.
    A reader that falls behind gets the newest window at once, and the skipped hops are counted."""
    from lbedge.sensors.microphone import Microphone

    with Microphone(device="pulse", window=0.5, hop=0.25, stall_timeout=1.0) as mic:
        frames = [mic.read() for _ in range(2)]
        time.sleep(0.6)  # 2.4 hops: one window fewer than a reader keeping up
        t0 = time.monotonic()
        frames.append(mic.read())
        assert time.monotonic() - t0 < 0.1
    assert [f.data.shape for f in frames] == [(1, 8000)] * 3
    assert not any(f.data.any() for f in frames)
    assert frames[1].meta["dropped_windows"] == 0 and frames[2].meta["dropped_windows"] == 1
    assert 0.55 < frames[2].device_timestamp - frames[1].device_timestamp < 0.75


class _Flags:
    input_overflow = False


class _Times:
    inputBufferAdcTime = 0.0


def test_ring_buffer_blocks_of_any_size():
    """The callback's ring keeps the newest window + hop samples whatever the block sizes (no PortAudio)."""
    from lbedge.sensors.microphone import _Capture

    cap = _Capture(window_n=10, hop_n=5, channels=2, rate=10)
    rng = np.random.default_rng(0)
    n = 0
    for size in list(rng.integers(1, 40, 60)) + [15, 16, 1]:
        block = np.stack([np.arange(n, n + size), -np.arange(n, n + size)], 1).astype(np.float32)
        cap.callback(block, int(size), _Times(), _Flags())
        n += size
        assert cap.written == n
        for end in (n, n - 5):
            got = cap.copy(end, 10)
            np.testing.assert_array_equal(got[:, 0], np.arange(end - 10, end))
            np.testing.assert_array_equal(got[:, 1], -np.arange(end - 10, end))
    assert cap.last_adc == 0.0 and cap.overflows == 0


def test_device_selection(vmic):
    from lbedge.sensors.microphone import Microphone, list_input_devices

    names = [d.name for d in list_input_devices()]
    assert "pulse" in names
    pulse = next(d for d in list_input_devices() if d.name == "pulse")
    assert pulse.channels > 0 and pulse.default_rate == 44100
    for spec in ("PULSE", pulse.index, str(pulse.index)):  # case-insensitive name, index, index as text
        with Microphone(device=spec, window=0.2, hop=0.1) as mic:
            assert mic.device_name == "pulse" and mic.read().data.shape == (1, 3200)
    with pytest.raises(SensorError, match=r"no input device matches 'no-such-mic'.*'pulse'"):
        Microphone(device="no-such-mic").open()
    with pytest.raises(SensorError, match="no input device matches 999"):
        Microphone(device=999).open()
    with pytest.raises(SensorError, match="matches several"):  # "pulse" and "default"
        Microphone(device="e").open()
    with pytest.raises(SensorError, match="has 32 input channel"):
        Microphone(device="pulse", channels=64).open()
    wait_streams_closed()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window=0),
        dict(hop=-1.0),
        dict(window=float("nan")),
        dict(channels=0),
        dict(channels=1.5),
        dict(target_rate=0),
        dict(sample_rate=-8000),
        dict(stall_timeout=0),
        dict(window=1e-6),
    ],
)
def test_invalid_options(kwargs):
    from lbedge.sensors.microphone import Microphone

    with pytest.raises(SensorError):
        Microphone(**kwargs)


def test_frozen_server_stalls_then_closes(vmic):
    """A sound server that stops answering: read() raises within stall_timeout, close() does not hang."""
    from lbedge.sensors.microphone import Microphone

    mic = Microphone(device="pulse", window=0.2, hop=0.1, stall_timeout=1.0, open_timeout=0.5, close_timeout=0.5)
    mic.open()
    try:
        mic.read()
        vmic.freeze()
        t0 = time.monotonic()
        with pytest.raises(SensorError, match="no audio"):
            while True:  # samples already buffered may still make a window or two
                mic.read()
        assert time.monotonic() - t0 < 1.6
        t0 = time.monotonic()
        mic.close()  # PortAudio's abort blocks until the server answers: abandoned after close_timeout
        assert time.monotonic() - t0 < 1.0
        t0 = time.monotonic()
        with pytest.raises(SensorError, match="did not finish within 0.5 s"):
            mic.open()  # connecting blocks too: abandoned after open_timeout
        assert time.monotonic() - t0 < 1.0
    finally:
        vmic.thaw()
    wait_streams_closed()  # the abandoned close finishes, and the late stream is closed, once the server runs


def test_dead_server_and_recovery(vmic, tmp_path):
    """The daemon dies (an unplugged device): read() raises at once, close() is quick, reopening works later."""
    from lbedge.sensors.microphone import Microphone

    mic = Microphone(device="pulse", window=0.2, hop=0.1, stall_timeout=5.0, open_timeout=3.0)
    mic.open()
    mic.read()
    vmic.kill()
    t0 = time.monotonic()
    with pytest.raises(SensorError, match="stopped"):
        while True:
            mic.read()
    assert time.monotonic() - t0 < 1.0  # PortAudio ends the stream: no wait for stall_timeout
    t0 = time.monotonic()
    mic.close()
    assert time.monotonic() - t0 < 1.0
    wait_streams_closed()
    t0 = time.monotonic()
    # PortAudio still lists "pulse" but cannot connect; the source rescans and finds the device gone
    with pytest.raises(SensorError, match="cannot record from 'pulse'.*no longer listed"):
        mic.open()
    with pytest.raises(SensorError, match="no input device matches 'pulse'"):
        mic.open()
    assert time.monotonic() - t0 < 3.5
    # the server is back: the same source finds it again by rescanning PortAudio's devices itself
    with virtual_microphone(tmp_path / "again", reinit=False):
        with mic:
            assert mic.read().data.shape == (1, 3200)
    wait_streams_closed()


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, error: Exception):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            raise self.error
        return None


@pytest.mark.parametrize(
    "error, needle",
    [
        (ImportError("No module named 'sounddevice'"), r"lbedge\[audio\]"),
        (OSError("PortAudio library not found"), "apt install libportaudio2"),
    ],
)
def test_missing_sounddevice_or_portaudio(monkeypatch, error, needle):
    from lbedge.sensors.microphone import Microphone, list_input_devices

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Refuse(error)] + sys.meta_path)
    for call in (lambda: Microphone(device="pulse"), list_input_devices):
        with pytest.raises(MissingDependency, match=needle) as info:
            call()
        assert "lbedge[audio]" in str(info.value)


def test_played_sounds_are_classified_live_by_the_pipeline(vmic, tmp_path, monkeypatch):
    """A low tone then a high tone played into the virtual microphone come out of the pipeline as such."""
    from lbedge.pipeline import Pipeline
    from lbedge.sensors.microphone import Microphone
    from test_pipeline import fake_encoder

    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))
    labels = ["low", "high", "quiet"]

    def vision(x):  # a stand-in model on the real log-mel input: where the energy is
        band = x[:, 0].mean(axis=2)  # [B, mel bins]
        out = np.zeros((len(x), 3), np.float32)
        for i, b in enumerate(band):
            out[i, 2 if b.max() - b.min() < 1.0 else int(b.argmax() >= 56)] = 1.0
        return out

    enc = fake_encoder("audio", vision=vision, labels=labels)
    low = write_tone(tmp_path / "low.wav", 1.5, freq=300.0)
    t = np.arange(int(1.5 * 48000)) / 48000
    with wave.open(str(tmp_path / "seq.wav"), "wb") as w:  # 1.5 s at 300 Hz, then 1.5 s at 4 kHz
        high = 0.5 * np.cos(2 * np.pi * 4000.0 * t)
        pcm = np.round(np.concatenate([low, high]) * 32767).astype(np.int16)
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(48000), w.writeframes(pcm.tobytes())
    mic = Microphone(device="pulse", window=0.5, hop=0.25)
    seen = []
    with Pipeline({"mic": mic}, enc, labels, smoothing="none") as p:
        vmic.play(tmp_path / "seq.wav")
        for r in p:
            seen.append(r.update.raw_label)
            if len(seen) >= 16:
                break
    wait_streams_closed()
    assert "low" in seen and "high" in seen
    assert seen.index("low") < len(seen) - 1 - seen[::-1].index("high")  # the low tone came first
    assert all(not t.is_alive() for t in p.threads)
