"""Audio preprocessing: the official LanguageBind fbank "image", in numpy.

waveform -> mono -> resample to 16 kHz (torchaudio's windowed-sinc kernel) -> remove the mean ->
Kaldi fbank (Hann window 25 ms, shift 10 ms, pre-emphasis 0.97, power spectrum, 112 HTK mel bins,
log, no dither) -> ``target_length`` frames: padded by repetition, or three chunks ->
``(x - mean) / (2 * std)`` -> ``[3, mel_bins, target_length]``.

The official processor picks the three chunk starts of a long clip at random on every call.
lbedge is deterministic: by default it takes the start of the first third, the middle of the
middle third and the end of the last third of the possible start positions, so the three
chunks cover the beginning, middle and end of the clip. ``chunk_seed=N`` reproduces the
official choice made after ``numpy.random.seed(N)``.

Bounds: a clip may last at most ``limits().max_audio_seconds`` (checked from a file's header before
any sample is read, and again while reading), at a sample rate of at most :data:`MAX_SAMPLE_RATE`
with at most :data:`MAX_CHANNELS` channels. Files are decoded block by block (downmixed to mono on
the fly for the preprocessor), and the resampler's memory does not depend on the pair of rates.
"""

from __future__ import annotations

import math
import os
import struct
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from ..config import PreprocessConfig
from ..errors import InputError
from ..limits import hint, limits

_EPS = np.float32(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class AudioClip:
    """PCM samples ``[channels, samples]`` float32 in [-1, 1] with their sample rate."""

    samples: np.ndarray
    sample_rate: int


#: the highest sample rate lbedge accepts, in Hz (the fastest audio interfaces and ultrasonic recorders)
MAX_SAMPLE_RATE = 768_000
#: the most channels an audio file may have (microphone arrays, higher-order ambisonics)
MAX_CHANNELS = 64
#: frames decoded at a time when reading a file
_READ_BLOCK = 1 << 16
#: libsndfile reports a length at least this large when it does not know it
_UNKNOWN_LENGTH = 1 << 62
#: PCM sample widths (bytes) the built-in WAV reader decodes
_PCM_WIDTHS = (1, 2, 3, 4)


def check_sample_rate(sr: Any, what: str = "audio") -> int:
    """``sr`` as a whole number of Hz in ``[1, MAX_SAMPLE_RATE]``; anything else is an ``InputError``."""
    try:
        value = float(sr)
    except (TypeError, ValueError):
        raise InputError(f"invalid sample rate {sr!r} of {what}: give the rate in Hz as a number") from None
    if not math.isfinite(value) or value < 1:
        raise InputError(f"invalid sample rate {sr!r} of {what}: it must be a positive number of Hz")
    if value > MAX_SAMPLE_RATE:
        raise InputError(
            f"sample rate {value:g} Hz of {what} is above the {MAX_SAMPLE_RATE} Hz lbedge accepts: "
            "resample the recording first (e.g. ffmpeg -i in.wav -ar 48000 out.wav)"
        )
    return int(value)


def max_frames(sample_rate: int) -> int:
    """The most frames one clip at ``sample_rate`` may have under ``limits().max_audio_seconds``."""
    return int(limits().max_audio_seconds * sample_rate)


def check_duration(frames: int, sample_rate: int, what: str, *, at_least: bool = False) -> None:
    """Refuse ``frames`` samples at ``sample_rate`` when they last longer than ``limits().max_audio_seconds``
    (``at_least``: the clip was cut short while reading, so it lasts at least that long)."""
    if frames <= max_frames(sample_rate):
        return
    seconds = f"{'more than ' if at_least else ''}{frames / sample_rate:.1f} s"
    raise InputError(
        f"{what} lasts {seconds}, longer than the limit of {limits().max_audio_seconds:g} s "
        f"(max_audio_seconds): cut it into shorter clips, or {hint('max_audio_seconds')}"
    )


def _check_channels(channels: int, what: str) -> int:
    """A channel count in ``[1, MAX_CHANNELS]``, else an ``InputError``."""
    if not 1 <= channels <= MAX_CHANNELS:
        raise InputError(f"{what} has {channels} channels: lbedge reads 1 to {MAX_CHANNELS}")
    return channels


def _soundfile() -> Any:
    """The ``soundfile`` module, or None when it (or libsndfile) is not installed."""
    try:
        import soundfile  # optional: lbedge[audio]
    except (ImportError, OSError):  # OSError: the wheel is there but libsndfile is not
        return None
    return soundfile


def read_audio_file(path: str | os.PathLike, *, mono: bool = False) -> AudioClip:
    """Read WAV (built in) or any format libsndfile reads (FLAC, OGG...: needs ``lbedge[audio]``).

    The sample rate, channel count and duration are checked from the header before any sample is
    decoded, and the duration again while decoding (headers can lie). ``mono=True`` averages the
    channels block by block as they are decoded, so only one channel's worth is ever held.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"audio file not found: {p}")
    soundfile = _soundfile()
    if soundfile is not None:
        return _read_with_soundfile(soundfile, p, mono)
    if p.suffix.lower() not in (".wav", ".wave"):
        raise InputError(f'reading {p.suffix} audio needs soundfile: pip install "lbedge[audio]"')
    return _read_wav(p, mono)


def _read_with_soundfile(soundfile: Any, p: Path, mono: bool) -> AudioClip:
    """Decode ``p`` with libsndfile, block by block, after checking its header."""
    what = f"audio file {p}"
    try:
        with soundfile.SoundFile(str(p)) as f:
            sr = check_sample_rate(f.samplerate, what)
            channels = _check_channels(f.channels, what)
            known = 0 <= f.frames < _UNKNOWN_LENGTH
            if known:
                check_duration(f.frames, sr, what)
            samples = _collect(_soundfile_blocks(f), channels, mono, sr, what, f.frames if known else _READ_BLOCK)
    except InputError:
        raise
    except Exception as exc:  # libsndfile raises its own error types
        raise InputError(f"cannot read audio file {p}: {exc}") from exc
    return AudioClip(samples, sr)


def _soundfile_blocks(f: Any) -> Iterator[np.ndarray]:
    """Successive ``[frames, channels]`` float32 blocks of an open ``soundfile.SoundFile``."""
    while True:
        block = f.read(_READ_BLOCK, dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            return
        yield block


def _read_wav(p: Path, mono: bool) -> AudioClip:
    """Decode a PCM WAV file with the standard library, block by block, after checking its header."""
    what = f"WAV file {p}"
    try:
        with wave.open(str(p), "rb") as w:
            sr = check_sample_rate(w.getframerate(), what)
            channels = _check_channels(w.getnchannels(), what)
            width = w.getsampwidth()
            if width not in _PCM_WIDTHS:
                raise InputError(
                    f"unsupported WAV sample width {width * 8} bits in {p}: the built-in reader "
                    'decodes 8, 16, 24 and 32-bit PCM (other encodings: pip install "lbedge[audio]")'
                )
            # the data chunk cannot be longer than the file, whatever its header claims
            frames = min(w.getnframes(), p.stat().st_size // (channels * width))
            check_duration(frames, sr, what)
            samples = _collect(_wav_blocks(w, channels, width), channels, mono, sr, what, frames)
    except (wave.Error, EOFError, OSError, struct.error) as exc:
        raise InputError(f"cannot read WAV file {p}: {exc} (for non-PCM WAV install lbedge[audio])") from exc
    return AudioClip(samples, sr)


def _wav_blocks(w: wave.Wave_read, channels: int, width: int) -> Iterator[np.ndarray]:
    """Successive ``[frames, channels]`` float32 blocks of an open WAV file (a partial last frame is dropped)."""
    frame = channels * width
    while True:
        raw = w.readframes(_READ_BLOCK)
        usable = len(raw) // frame * frame
        if usable == 0:
            return
        yield _pcm_to_float(memoryview(raw)[:usable], width).reshape(-1, channels)


def _pcm_to_float(raw: Any, width: int) -> np.ndarray:
    """Little-endian PCM bytes of ``width`` bytes per sample -> float32 in [-1, 1]."""
    if width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        v = b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16)
        return (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    return np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)


def _collect(
    blocks: Iterable[np.ndarray], channels: int, mono: bool, sample_rate: int, what: str, expected: int
) -> np.ndarray:
    """Write decoded ``[frames, channels]`` blocks into one ``[channels, frames]`` array (``[1, frames]`` with
    ``mono``) sized for the ``expected`` frames of the header (grown if the header understated them),
    refusing the clip as soon as it passes the duration limit."""
    cap = max_frames(sample_rate)
    out = np.empty((1 if mono else channels, min(expected, cap)), np.float32)
    filled = 0
    for block in blocks:
        n = block.shape[0]
        if filled + n > cap:
            check_duration(filled + n, sample_rate, what, at_least=True)
        if filled + n > out.shape[1]:
            out = _grown(out, filled, min(cap, max(2 * out.shape[1], filled + n)))
        part = np.ascontiguousarray(block.T)
        out[:, filled : filled + n] = part.mean(axis=0, keepdims=True) if mono and channels > 1 else part
        filled += n
    return out if filled == out.shape[1] else out[:, :filled].copy()


def _grown(a: np.ndarray, filled: int, columns: int) -> np.ndarray:
    """A wider copy of the first ``filled`` columns of ``a``."""
    bigger = np.empty((a.shape[0], columns), a.dtype)
    bigger[:, :filled] = a[:, :filled]
    return bigger


class AudioFileReader:
    """An audio file read piece by piece at any position (a replay source streaming a long recording), with
    the header checked as :func:`read_audio_file` checks it but no duration limit: memory is one piece.

    ``read(start, count)`` returns float32 ``[channels, n]`` with ``n <= count`` (fewer at the end of the file);
    ``frames`` is the file's length in frames when its header states it (else None)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"audio file not found: {self.path}")
        what = f"audio file {self.path}"
        self._sf = self._wav = None
        soundfile = _soundfile()
        try:
            if soundfile is not None:
                self._sf = soundfile.SoundFile(str(self.path))
                rate, channels, frames = self._sf.samplerate, self._sf.channels, self._sf.frames
                self.frames: int | None = frames if 0 <= frames < _UNKNOWN_LENGTH else None
            else:
                if self.path.suffix.lower() not in (".wav", ".wave"):
                    raise InputError(f'reading {self.path.suffix} audio needs soundfile: pip install "lbedge[audio]"')
                self._wav = wave.open(str(self.path), "rb")
                rate, channels, self._width = (
                    self._wav.getframerate(),
                    self._wav.getnchannels(),
                    self._wav.getsampwidth(),
                )
                if self._width not in _PCM_WIDTHS:
                    raise InputError(
                        f"unsupported WAV sample width {self._width * 8} bits in {self.path} (other "
                        'encodings: pip install "lbedge[audio]")'
                    )
                self.frames = min(self._wav.getnframes(), self.path.stat().st_size // max(1, channels * self._width))
            self.sample_rate = check_sample_rate(rate, what)
            self.channels = _check_channels(channels, what)
        except InputError:
            self.close()
            raise
        except Exception as exc:  # libsndfile and wave raise their own error types
            self.close()
            raise InputError(f"cannot read audio file {self.path}: {exc}") from exc

    def read(self, start: int, count: int) -> np.ndarray:
        """Frames ``[start, start + count)`` as float32 ``[channels, n]`` (``n`` smaller at the end)."""
        count = max(0, min(int(count), max_frames(self.sample_rate)))
        try:
            if self._sf is not None:
                self._sf.seek(int(start))
                block = self._sf.read(count, dtype="float32", always_2d=True)
                return np.ascontiguousarray(block.T)
            assert self._wav is not None
            if self.frames is not None and start >= self.frames:
                return np.zeros((self.channels, 0), np.float32)
            self._wav.setpos(int(start))
            raw = self._wav.readframes(count)
            frame = self.channels * self._width
            usable = len(raw) // frame * frame
            pcm = _pcm_to_float(memoryview(raw)[:usable], self._width).reshape(-1, self.channels)
            return np.ascontiguousarray(pcm.T)
        except InputError:
            raise
        except Exception as exc:  # a file truncated or changed under the reader
            raise InputError(f"cannot read audio file {self.path} at frame {start}: {exc}") from exc

    def close(self) -> None:
        for handle in (self._sf, self._wav):
            if handle is not None:
                try:
                    handle.close()
                except Exception:  # noqa: BLE001 - closing must not fail
                    pass
        self._sf = self._wav = None

    def __enter__(self) -> "AudioFileReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def to_clip(x: Any, sample_rate: int | None = None, *, mono: bool = False) -> AudioClip:
    """A path, ``(samples, rate)``, ``{"array", "sampling_rate"}``, AudioClip or array (+ ``sample_rate``).

    ``mono=True`` downmixes a file while it is decoded (arrays are returned with their channels). Every
    clip is checked against ``limits().max_audio_seconds`` and :data:`MAX_SAMPLE_RATE`.
    """
    if isinstance(x, (str, os.PathLike)):
        return read_audio_file(x, mono=mono)
    if isinstance(x, AudioClip):
        arr, sr = x.samples, x.sample_rate
    elif isinstance(x, tuple) and len(x) == 2 and np.isscalar(x[1]):
        arr, sr = x
    elif isinstance(x, dict) and "array" in x:
        arr, sr = x["array"], x.get("sampling_rate", x.get("sample_rate"))
    elif isinstance(x, np.ndarray):
        arr, sr = x, sample_rate
    else:
        raise InputError(
            f"unsupported audio input of type {type(x).__name__}: pass a file path, "
            "(samples, sample_rate), or an array with sample_rate="
        )
    if sr is None:
        raise InputError(
            "audio array given without its sample rate: pass (samples, sample_rate) or preprocess(..., sample_rate=...)"
        )
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim == 2:
        if arr.shape[0] > arr.shape[1]:  # [samples, channels] (soundfile layout)
            arr = arr.T
    else:
        raise InputError(f"audio must be 1-D samples or 2-D [channels, samples], got shape {arr.shape}")
    sr = check_sample_rate(sr, "the audio array")
    check_duration(arr.shape[1], sr, "the audio clip")
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif arr.dtype == np.int32:
        arr = arr.astype(np.float32) / float(1 << 31)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32, copy=False)  # never modified in place: no copy needed
    else:
        raise InputError(f"unsupported audio dtype {arr.dtype}: use float32 in [-1, 1], int16 or int32 PCM")
    return AudioClip(arr, sr)


# --- resampling ---------------------------------------------------------------------------------------

_WIDTH_TAPS = 6  # torchaudio's default lowpass_filter_width
_ROLLOFF = 0.99  # torchaudio's default rolloff
#: largest polyphase kernel (elements) built and cached; every common pair of rates needs far less
_MAX_KERNEL = 1 << 19
#: elements of each array the direct resampler holds at once
_DIRECT_CHUNK = 1 << 16
#: input samples the polyphase resampler copies (zero-padded) at once
_POLYPHASE_SPAN = 1 << 20


def _kernel_width(orig: int, new: int) -> int:
    """Half-width in input samples of torchaudio's kernel for the reduced rates ``orig`` -> ``new``."""
    return math.ceil(_WIDTH_TAPS * orig / (min(orig, new) * _ROLLOFF))


@lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """torchaudio's ``sinc_interp_hann`` polyphase kernel ``[new, 2 * width + orig]`` (orig/new reduced).

    Only kernels of at most ``_MAX_KERNEL`` elements are built, so the cache stays small; larger ones
    are a ``ValueError`` (``resample`` takes the direct path for them).
    """
    base = min(orig, new) * _ROLLOFF
    width = _kernel_width(orig, new)
    if new * (2 * width + orig) > _MAX_KERNEL:
        raise ValueError(
            f"the polyphase kernel for {orig} -> {new} would have {new * (2 * width + orig)} "
            f"elements (more than {_MAX_KERNEL}): resample takes the direct path for it"
        )
    idx = np.arange(-width, width + orig, dtype=np.float32)[None, :] / np.float32(orig)
    t = np.arange(0, -new, -1, dtype=np.float32)[:, None] / np.float32(new) + idx
    t = np.clip(t * np.float32(base), -_WIDTH_TAPS, _WIDTH_TAPS).astype(np.float32)
    window = np.cos(t * np.float32(math.pi / _WIDTH_TAPS / 2)) ** 2
    t = t * np.float32(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, np.float32(1.0), np.sin(t) / t)
    kernel = (k * window * np.float32(base / orig)).astype(np.float32)
    kernel.flags.writeable = False  # cached: shared by every call
    return kernel, width


def _positive_rate(sr: Any) -> int:
    """A sample rate given to ``resample`` as a positive int, else an ``InputError``."""
    try:
        value = int(sr)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"invalid sample rate {sr!r}: give the rate in Hz as a positive integer") from None
    if not 1 <= value < 1 << 31 or value != sr:
        raise InputError(f"invalid sample rate {sr!r}: give the rate in Hz as a positive integer")
    return value


def _output_length(n: int, orig: int, new: int) -> int:
    """Samples torchaudio returns for ``n`` input samples resampled from ``orig`` to ``new``."""
    return math.ceil(new * n / orig)


def resample(x: np.ndarray, orig_sr: int, new_sr: int, *, _method: str = "auto") -> np.ndarray:
    """Resample ``[channels, samples]`` like ``torchaudio.functional.resample`` (default settings).

    When the reduced ratio of the rates gives a small polyphase kernel (every common rate), this runs
    torchaudio's own algorithm (same kernel, same strided convolution). Otherwise (say 44101 Hz) it
    evaluates the same windowed sinc at each output sample, in chunks: the memory it needs does not
    depend on the rates, and the output has the same length. ``_method`` (``"polyphase"`` or
    ``"direct"``) forces one path, for tests.
    """
    orig_sr, new_sr = _positive_rate(orig_sr), _positive_rate(new_sr)
    if orig_sr == new_sr:
        return x
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    width = _kernel_width(orig, new)
    method = _method
    if method == "auto":
        method = "polyphase" if new * (2 * width + orig) <= _MAX_KERNEL else "direct"
    if method == "polyphase":
        return _resample_polyphase(x, orig, new)
    if method == "direct":
        return _resample_direct(x, orig, new, width)
    raise ValueError(f"unknown resampling method {_method!r}: use 'auto', 'polyphase' or 'direct'")


def _resample_polyphase(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    """torchaudio's algorithm: the strided convolution of the zero-padded input with the polyphase kernel,
    ``new`` outputs per block of ``orig`` inputs.

    It is computed a span of about ``_POLYPHASE_SPAN`` input samples at a time, so the padded copy (and the
    contiguous copy numpy makes of the overlapping windows for BLAS) stays that small. Every span is at
    least half that long: BLAS takes another summation order for very small products, and long spans keep
    the result identical to one product over the whole signal."""
    kernel, width = _sinc_kernel(orig, new)
    channels, n = x.shape
    blocks = n // orig + 1  # the windows torchaudio's convolution computes
    out = np.empty((channels, blocks * new), np.float32)
    step = max(1, _POLYPHASE_SPAN // orig)
    bounds = list(range(0, blocks, step)) + [blocks]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < step // 2:
        del bounds[-2]  # a short tail joins the span before it
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        seg = _zero_padded(x, b0 * orig - width, (b1 - 1) * orig - width + kernel.shape[1])
        windows = np.lib.stride_tricks.sliding_window_view(seg, kernel.shape[1], axis=-1)[:, ::orig]
        out[:, b0 * new : b1 * new] = (windows @ kernel.T).reshape(channels, -1)
    return np.ascontiguousarray(out[:, : _output_length(n, orig, new)])  # a copy only for several channels


def _zero_padded(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Samples ``start`` to ``stop`` (exclusive) of ``x`` along the last axis, zeros outside the signal."""
    n = x.shape[-1]
    seg = np.zeros((x.shape[0], stop - start), np.result_type(x.dtype, np.float32))
    lo, hi = max(start, 0), min(stop, n)
    if hi > lo:
        seg[:, lo - start : hi - start] = x[:, lo:hi]
    return seg


def _resample_direct(x: np.ndarray, orig: int, new: int, width: int) -> np.ndarray:
    """The same output as ``_resample_polyphase``, each sample computed from its own kernel taps.

    Output ``j`` lies at input position ``j * orig / new``; its taps are the input samples from ``width``
    before to ``width + 1`` after it, weighted by torchaudio's windowed sinc of their distance. Outputs
    ``j`` and ``j + new`` share their weights (the phase repeats), so the weights of a chunk of phases
    are computed once and applied in every period. Every array is at most ``_DIRECT_CHUNK`` elements
    per channel (taps are split too when one output alone needs more).
    """
    channels, n = x.shape
    out_len = _output_length(n, orig, new)
    out = np.zeros((channels, out_len), np.float32)
    offsets = np.arange(-width, width + 2, dtype=np.int64)
    tap_step = min(offsets.size, _DIRECT_CHUNK)
    phase_step = max(1, _DIRECT_CHUNK // tap_step)
    scale = min(orig, new) * _ROLLOFF / orig  # input samples -> the kernel's time unit
    for p0 in range(0, min(new, out_len), phase_step):
        phases = np.arange(p0, min(p0 + phase_step, new, out_len), dtype=np.int64)
        first, rem = np.divmod(phases * orig, new)  # output p sits at input position first + rem / new
        frac = rem / new
        for t0 in range(0, offsets.size, tap_step):
            taps = offsets[t0 : t0 + tap_step]
            weights = _windowed_sinc((taps - frac[:, None]) * scale, scale)
            _apply_periods(x, out, first[:, None] + taps, weights, p0, orig, new)
    return out


def _apply_periods(
    x: np.ndarray, out: np.ndarray, idx: np.ndarray, weights: np.ndarray, p0: int, orig: int, new: int
) -> None:
    """Add ``weights`` times the input taps ``idx`` (of the outputs ``p0, p0 + 1, ...``) to ``out``, and the
    same for the outputs one, two... periods of ``new`` later, whose taps are ``orig`` samples further on."""
    n, out_len = x.shape[1], out.shape[1]
    for start in range(p0, out_len, new):
        count = min(idx.shape[0], out_len - start)
        at, w = idx[:count] + (start - p0) // new * orig, weights[:count]
        if at[0, 0] < 0 or at[-1, -1] >= n:  # near an end: the signal is zero-padded
            w = np.where((at >= 0) & (at < n), w, np.float32(0.0))
            at = np.clip(at, 0, max(n - 1, 0))
        out[:, start : start + count] += np.einsum("cjt,jt->cj", x[:, at], w)


def _windowed_sinc(t: np.ndarray, scale: float) -> np.ndarray:
    """torchaudio's ``sinc_interp_hann`` weights at kernel times ``t`` (float64, modified in place), float32."""
    np.clip(t, -_WIDTH_TAPS, _WIDTH_TAPS, out=t)
    window = np.cos(t * (math.pi / _WIDTH_TAPS / 2))
    window *= window
    t *= math.pi
    zero = t == 0
    t[zero] = 1.0
    sinc = np.sin(t)
    sinc /= t
    sinc[zero] = 1.0
    sinc *= window
    sinc *= scale
    return sinc.astype(np.float32)


@lru_cache(maxsize=8)
def _mel_banks(num_bins: int, n_fft: int, sample_rate: float, low: float = 20.0, high: float = 0.0) -> np.ndarray:
    """Kaldi triangular mel filters, transposed: ``[n_fft // 2 + 1, num_bins]`` (HTK mel scale, last FFT bin
    zero), ready to multiply a power spectrum."""
    nyquist = 0.5 * sample_rate
    if high <= 0.0:
        high += nyquist
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
    lo, hi = mel(low), mel(high)
    delta = (hi - lo) / (num_bins + 1)
    b = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
    fft_mel = mel(sample_rate / n_fft * np.arange(n_fft // 2))[None, :]
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    out = np.ascontiguousarray(np.pad(banks, ((0, 0), (0, 1))).T.astype(np.float32))  # [bins, mel]
    out.flags.writeable = False  # cached: shared by every call
    return out


@lru_cache(maxsize=8)
def _hann(size: int) -> np.ndarray:
    """Symmetric Hann window (Kaldi's "hanning"), float32."""
    n = np.arange(size, dtype=np.float64)
    out = (0.5 - 0.5 * np.cos(2 * np.pi * n / (size - 1))).astype(np.float32)
    out.flags.writeable = False
    return out


def power_spectrum(frames: np.ndarray, n_fft: int, *, padded: bool = False) -> np.ndarray:
    """``|rfft(frames, n_fft)|^2`` per row, float32 ``[rows, n_fft // 2 + 1]`` (``padded``: ``frames`` already
    has ``n_fft`` columns, zero-padded).

    OpenCV's row-wise real DFT (packed CCS layout: Re0, Re1, Im1, ..., Re(n/2)) is faster than numpy's FFT here
    and agrees with a float64 FFT as closely as numpy's float32 FFT does (tests/test_preprocess.py).
    """
    rows, size = frames.shape
    if padded:
        if size != n_fft:
            raise InputError(f"padded frames must have {n_fft} columns, got {size}")
    else:
        frames = np.pad(frames.astype(np.float32, copy=False), ((0, 0), (0, n_fft - size)))
    d = cv2.dft(np.ascontiguousarray(frames, dtype=np.float32), flags=cv2.DFT_ROWS)
    out = np.empty((rows, n_fft // 2 + 1), np.float32)
    out[:, 0] = d[:, 0] * d[:, 0]
    out[:, -1] = d[:, -1] * d[:, -1]
    re, im = d[:, 1:-1:2], d[:, 2:-1:2]
    np.multiply(re, re, out=out[:, 1:-1])
    out[:, 1:-1] += im * im
    return out


def _frame_size_shift(cfg: PreprocessConfig) -> tuple[int, int]:
    """Samples per fbank frame and between frame starts."""
    sr = cfg.sample_rate
    return int(sr * cfg.frame_length_ms * 0.001), int(sr * cfg.frame_shift_ms * 0.001)


def num_frames(samples: int, cfg: PreprocessConfig) -> int:
    """Frames the fbank of ``samples`` samples has; too short a clip is an ``InputError``."""
    size, shift = _frame_size_shift(cfg)
    if samples < size:
        raise InputError(
            f"audio too short: {samples} samples at {cfg.sample_rate} Hz, need at least {size} "
            f"({cfg.frame_length_ms:g} ms)"
        )
    return 1 + (samples - size) // shift


def fbank(wave_1d: np.ndarray, cfg: PreprocessConfig, *, first: int = 0, count: int | None = None) -> np.ndarray:
    """Kaldi-compatible log mel filterbank ``[frames, mel_bins]`` (torchaudio.compliance.kaldi.fbank).

    ``first`` and ``count`` compute only those frames (each frame depends on its own samples alone), so a
    long clip's chunks cost no more memory than a short clip.
    """
    sr = cfg.sample_rate
    size, shift = _frame_size_shift(cfg)
    n_fft = 1 << (size - 1).bit_length()
    m = num_frames(wave_1d.size, cfg) - first
    m = m if count is None else min(m, count)
    wave_1d = wave_1d[first * shift : (first + m - 1) * shift + size]
    # frames are built in place in the zero-padded FFT buffer: DC removal, pre-emphasis, window
    buf = np.zeros((m, n_fft), np.float32)
    frames = buf[:, :size]
    frames[:] = np.lib.stride_tricks.sliding_window_view(wave_1d, size)[::shift][:m]
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= np.float32(0.97) * frames[:, :-1]  # right side is evaluated first: the old values
    frames[:, 0] *= np.float32(1.0 - 0.97)
    frames *= _hann(size)
    mel = power_spectrum(buf, n_fft, padded=True) @ _mel_banks(cfg.num_mel_bins, n_fft, float(sr))
    np.maximum(mel, _EPS, out=mel)
    return np.log(mel, out=mel)


def chunk_starts(total: int, target: int, seed: int | None = None) -> tuple[int, int, int]:
    """Start frames of the three ``target``-frame chunks of a ``total``-frame log-mel (total > target)."""
    ranges = np.array_split(np.arange(0, total - target + 1), 3)
    ranges = [r if len(r) else np.array([0]) for r in ranges]
    if seed is not None:
        rng = np.random.RandomState(seed)  # the legacy global generator the official code draws from
        return tuple(int(rng.choice(r)) for r in ranges)  # type: ignore[return-value]
    return int(ranges[0][0]), int(ranges[1][len(ranges[1]) // 2]), int(ranges[2][-1])


def audio_transform(
    x: Any, cfg: PreprocessConfig, *, sample_rate: int | None = None, chunk_seed: int | None = None
) -> np.ndarray:
    """One audio clip -> ``[3, mel_bins, target_length]`` float32."""
    clip = to_clip(x, sample_rate, mono=True)
    if clip.samples.size == 0:
        raise InputError("audio is empty (0 samples)")
    if not (np.isfinite(clip.samples.min()) and np.isfinite(clip.samples.max())):  # NaN propagates to both
        raise InputError("audio contains NaN or infinite samples")
    mono = clip.samples.mean(axis=0, keepdims=True) if clip.samples.shape[0] > 1 else clip.samples
    wav = resample(mono, clip.sample_rate, cfg.sample_rate)[0]
    wav = wav - wav.mean()
    target = cfg.target_length
    total = num_frames(wav.size, cfg)
    if total > target:  # only the three chunks' frames are computed
        starts = chunk_starts(total, target, chunk_seed)
        chunks = np.stack([fbank(wav, cfg, first=s, count=target) for s in starts])
    else:
        mel = fbank(wav, cfg)
        if mel.shape[0] < target:
            reps = target // mel.shape[0] + 1
            mel = np.tile(mel, (reps, 1))[:target]
        chunks = np.stack([mel, mel, mel])
    chunks = chunks.transpose(0, 2, 1)
    return ((chunks - np.float32(cfg.audio_mean)) / np.float32(cfg.audio_std * 2)).astype(np.float32)
