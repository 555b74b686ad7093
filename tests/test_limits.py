"""Field safety of preprocessing: no input may cause unbounded memory or work.

Explicit cases (a small file claiming a huge image, odd audio sample rates, lying headers, the limits
themselves) and a fault corpus: random bytes and byte-level mutations of real PNG, JPEG, 16-bit PNG,
TIFF and WAV files, which must each give a finite float32 array of the right shape or an InputError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import struct
import sys
import time
import tracemalloc
import wave
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SAMPLES
from lbedge import limits as lblimits
from lbedge.config import PreprocessConfig
from lbedge.errors import InputError
from lbedge.preprocess import Preprocessor
from lbedge.preprocess import audio as audio_mod
from lbedge.preprocess.audio import read_audio_file, resample
from lbedge.preprocess.image import decode_image
from lbedge.preprocess.image_header import MAX_JPEG_SCANS, bytes_source, read_header

IMG = Preprocessor(PreprocessConfig("image"))
DEPTH = Preprocessor(PreprocessConfig("depth"))
AUDIO = Preprocessor(PreprocessConfig("audio"))
VIDEO = Preprocessor(PreprocessConfig("video", interpolation="bilinear"))


@pytest.fixture
def set_limits():
    """``lbedge.limits.set_limits`` for the test; the limits in force before are restored afterwards."""
    previous = lblimits.limits()
    yield lblimits.set_limits
    lblimits.set_limits(**dataclasses.asdict(previous))


@pytest.fixture(params=["soundfile", "wave"])
def audio_reader(request, monkeypatch):
    """Run an audio test with libsndfile, then with the standard library's WAV reader."""
    if request.param == "wave":
        monkeypatch.setitem(sys.modules, "soundfile", None)  # import soundfile -> ImportError
    else:
        pytest.importorskip("soundfile")
    return request.param


@contextlib.contextmanager
def _limited(**changes):
    """Limits changed inside the block only (for hypothesis tests, which cannot take function fixtures)."""
    previous = lblimits.set_limits(**changes)
    try:
        yield
    finally:
        lblimits.set_limits(**dataclasses.asdict(previous))


def _peak_bytes(fn, *args, **kw):
    """(result or exception, peak bytes traced by tracemalloc while ``fn`` ran, seconds)."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        result = fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - returned to the caller to assert on
        result = exc
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, peak, seconds


def _rgb(h=37, w=53, seed=0):
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).integers(0, 40, (h, w, 3))
    return np.clip(np.stack([x * 4, y * 6, (x + y) * 2], axis=2) + noise, 0, 255).astype(np.uint8)


def _encode(ext: str, img: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def _wav_bytes(samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> bytes:
    """A PCM WAV file written by the standard library."""
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels), w.setsampwidth(width), w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def _tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _raw_wav(rate=16000, channels=1, bits=16, frames=100, data_size=None, fmt=1) -> bytes:
    """A WAV file with any header values, valid or not."""
    width = (bits + 7) // 8
    data = bytes(frames * channels * width)
    fmt_chunk = struct.pack(
        "<HHIIHH",
        fmt,
        channels,
        rate % (1 << 32),
        (rate * channels * width) % (1 << 32),
        (channels * width) % (1 << 16),
        bits,
    )
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- 1. the resampler's memory does not depend on the rates ---------------------------------------------


@pytest.mark.parametrize("orig,new", [(44100, 16000), (32000, 16000), (8000, 16000), (16000, 44100), (22050, 16000)])
def test_direct_resampler_agrees_with_polyphase(orig, new):
    """The chunked windowed-sinc path and torchaudio's polyphase path compute the same filter (the
    polyphase kernel is built in float32, the direct weights in float64: they differ by rounding)."""
    x = np.stack([_tone(orig, 0.5), _tone(orig, 0.5, freq=3001.5, amp=0.4)])
    x[1, ::7] += 0.2  # not only smooth signals
    poly = resample(x, orig, new, _method="polyphase")
    direct = resample(x, orig, new, _method="direct")
    assert direct.shape == poly.shape and direct.dtype == np.float32
    assert np.abs(direct - poly).max() < 2e-5


@pytest.mark.timeout(60)
@pytest.mark.parametrize("orig", [44101, 16001, 7999, 44056, 96001, 767999])
def test_odd_rates_resample_in_bounded_memory(orig):
    """Before, 44101 -> 16000 built a 16000 x 44135 float kernel (11 GB of memory at the peak, 39 s) and
    cached it; now any pair of rates needs a few MB beyond the input and output, and a tone stays that tone."""
    seconds = 2.0
    x = _tone(orig, seconds)[None]
    out, peak, _ = _peak_bytes(resample, x, orig, 16000)
    assert not isinstance(out, Exception), out
    assert out.shape == (1, math.ceil(16000 * x.shape[1] / orig))
    assert peak < out.nbytes + 8 * 2**20  # output + 8 MiB of working memory
    t = np.arange(out.shape[1]) / 16000
    inner = slice(400, -400)  # away from the zero-padded ends
    assert np.abs(out[0, inner] - 0.5 * np.sin(2 * np.pi * 440 * t[inner])).max() < 2e-3
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert abs(np.argmax(spectrum) * 16000 / out.shape[1] - 440) <= 16000 / out.shape[1]


def test_polyphase_cache_holds_only_small_kernels():
    before = audio_mod._sinc_kernel.cache_info()
    resample(_tone(44101, 0.2)[None], 44101, 16000)
    assert audio_mod._sinc_kernel.cache_info().currsize == before.currsize  # not built, not cached
    t = time.perf_counter()
    with pytest.raises(ValueError, match="direct path"):
        audio_mod._sinc_kernel(44101, 16000)  # refused before any allocation
    assert time.perf_counter() - t < 0.1
    kernel, _ = audio_mod._sinc_kernel(441, 160)  # 44100 -> 16000: cached, read-only
    assert kernel.size <= audio_mod._MAX_KERNEL and not kernel.flags.writeable


def test_mel_banks_is_cached_once():
    assert not hasattr(audio_mod._mel_banks.__wrapped__, "cache_info")


@pytest.mark.parametrize("rate", [0, -16000, 1.5, float("nan"), "fast"])
def test_resample_rejects_invalid_rates(rate):
    with pytest.raises(InputError, match="sample rate"):
        resample(np.zeros((1, 100), np.float32), rate, 16000)


def test_polyphase_spans_give_the_same_bits_as_one_product(monkeypatch):
    """The polyphase path works a span of input at a time (bounded copies); the result is identical."""
    x = np.random.default_rng(2).standard_normal((2, 3 * 2**20 + 11)).astype(np.float32)
    for orig in (44100, 11025, 48000):
        spans = resample(x, orig, 16000)
        monkeypatch.setattr(audio_mod, "_POLYPHASE_SPAN", 1 << 40)
        whole = resample(x, orig, 16000)
        monkeypatch.undo()
        np.testing.assert_array_equal(spans, whole)


def test_long_clips_compute_only_the_chunk_frames():
    """A long clip's fbank is computed for its three chunks only: the same numbers, a fraction of the memory."""
    cfg = PreprocessConfig("audio")
    wav = np.random.default_rng(4).standard_normal(16000 * 40).astype(np.float32) * 0.1
    out = AUDIO((wav, 16000), chunk_seed=11)
    full = audio_mod.fbank(wav - wav.mean(), cfg)
    starts = audio_mod.chunk_starts(full.shape[0], cfg.target_length, 11)
    chunks = np.stack([full[s : s + cfg.target_length] for s in starts]).transpose(0, 2, 1)
    expected = (chunks - np.float32(cfg.audio_mean)) / np.float32(cfg.audio_std * 2)
    np.testing.assert_array_equal(out[0], expected)
    long = np.zeros(16000 * 600, np.float32)  # ten minutes, at the limit
    _, peak, _ = _peak_bytes(AUDIO, (long, 16000))
    assert peak < long.nbytes * 2


def test_decoded_audio_grows_past_an_understated_header():
    blocks = [np.full((1000, 2), i, np.float32) for i in range(5)]
    out = audio_mod._collect(iter(blocks), 2, False, 16000, "x", expected=1500)
    assert out.shape == (2, 5000) and out[0, 4999] == 4 and out[1, 1000] == 1
    mono = audio_mod._collect(iter(blocks), 2, True, 16000, "x", expected=0)
    assert mono.shape == (1, 5000)


@pytest.mark.timeout(60)
def test_wav_at_44101_hz_is_preprocessed_in_bounded_memory(tmp_path, audio_reader):
    path = tmp_path / "odd.wav"
    path.write_bytes(_wav_bytes(np.round(_tone(44101, 1.0) * 32767).astype("<i2"), 44101))
    out, peak, _ = _peak_bytes(AUDIO, str(path))
    assert not isinstance(out, Exception), out
    assert out.shape == (1, 3, 112, 1036) and np.isfinite(out).all()
    assert peak < 48 * 2**20
    ref = AUDIO((_tone(16000, 1.0), 16000))  # the same tone recorded at 16 kHz
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.99


# --- 2. decoded image pixel limit -------------------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A real small PNG whose IHDR is rewritten (with a valid CRC) to claim another size."""
    data = bytearray(_encode(".png", _rgb(8, 8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encode(".jpg", _rgb(8, 8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encode(".bmp", _rgb(8, 8)))
    data[18:26] = struct.pack("<ii", width, -height)  # top-down rows: negative height
    return bytes(data)


def _tiff_claiming(width: int, height: int, *, big: bool = False, order: str = "<") -> bytes:
    """A minimal TIFF or BigTIFF with only ImageWidth and ImageLength in its first directory."""
    magic = b"II" if order == "<" else b"MM"
    if big:
        head = magic + struct.pack(order + "HHHQ", 43, 8, 0, 16)
        ifd = struct.pack(order + "Q", 2) + b"".join(
            struct.pack(order + "HHQQ", tag, 16, 1, v) for tag, v in ((256, width), (257, height))
        )
        return head + ifd + struct.pack(order + "Q", 0)
    head = magic + struct.pack(order + "HI", 42, 8)
    ifd = struct.pack(order + "H", 2) + b"".join(
        struct.pack(order + "HHII", tag, 4, 1, v) for tag, v in ((256, width), (257, height))
    )
    return head + ifd + struct.pack(order + "I", 0)


def _webp_claiming(width: int, height: int) -> bytes:
    vp8x = (
        b"VP8X"
        + struct.pack("<I", 10)
        + b"\x00\x00\x00\x00"
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


HUGE_IMAGES = {
    "png": lambda w, h: _png_claiming(w, h),
    "jpeg": lambda w, h: _jpeg_claiming(w, h),
    "bmp": lambda w, h: _bmp_claiming(w, h),
    "tiff": lambda w, h: _tiff_claiming(w, h),
    "tiff-be": lambda w, h: _tiff_claiming(w, h, order=">"),
    "bigtiff": lambda w, h: _tiff_claiming(w, h, big=True),
    "webp": lambda w, h: _webp_claiming(w, h),
    "gif": lambda w, h: b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0) + b";",
    "pgm": lambda w, h: b"P5\n# a comment\n%d %d\n255\n" % (w, h) + bytes(64),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(HUGE_IMAGES))
def test_small_file_claiming_a_huge_image_is_refused_before_decoding(kind, tmp_path):
    """A tiny file whose header claims 30000 x 60000 (5.4 GB of RGB) is refused from the header."""
    data = HUGE_IMAGES[kind](30000, 60000)
    assert len(data) < 4096
    path = tmp_path / f"huge.{kind}"
    path.write_bytes(data)
    for source in (data, path):
        err, peak, seconds = _peak_bytes(decode_image, source)
        assert isinstance(err, InputError), err
        assert "30000 x 60000" in str(err) and "max_image_pixels" in str(err)
        assert peak < 2**20 and seconds < 1.0
    with pytest.raises(InputError, match="max_image_pixels"):
        IMG(data)
    with pytest.raises(InputError, match="max_image_pixels"):
        DEPTH(str(path))


def test_png_chunk_claiming_gigabytes_is_refused_before_opencv_allocates_it():
    """OpenCV allocates each PNG chunk at its declared length: a 1 KB file claiming a 2.6 GB IDAT chunk cost
    2.6 GB and seconds before; now the chunk is checked against the data first."""
    data = bytearray(ENCODED["png"][0])
    idat = data.index(b"IDAT") - 4
    data[idat : idat + 4] = struct.pack(">I", 2_650_801_478)
    before = _peak_rss()
    t = time.perf_counter()
    with pytest.raises(InputError, match=r"b'IDAT'.*claims 2650801478 bytes, past the end"):
        IMG(bytes(data))
    assert time.perf_counter() - t < 0.5 and _peak_rss() - before < 64 * 2**20


def _progressive_jpeg_with_scans(extra: int, *, after_end: bool = False) -> bytes:
    """A progressive JPEG whose last scan is repeated ``extra`` times (before the end of image, or after it,
    where decoders ignore it)."""
    data = _encode(".jpg", _rgb(64, 64), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    last = data[data.rindex(b"\xff\xda") : -2]
    if after_end:
        return data + last * extra + b"\xff\xd9"
    return data[:-2] + last * extra + b"\xff\xd9"


def test_jpeg_with_too_many_scans_is_refused():
    """Each scan of a progressive JPEG is a pass over the whole image: 2000 scans in 156 KB took 23 s to decode
    at 4000 x 4000 before. Scans are counted first (a decoder's walk, not a byte search)."""
    assert IMG(_progressive_jpeg_with_scans(20)).shape == (1, 3, 224, 224)
    with pytest.raises(InputError, match=f"more than {MAX_JPEG_SCANS} scans"):
        IMG(_progressive_jpeg_with_scans(MAX_JPEG_SCANS))
    # data after the end of the image (a phone's appended video, say) is not counted
    assert IMG(_progressive_jpeg_with_scans(2 * MAX_JPEG_SCANS, after_end=True)).shape == (1, 3, 224, 224)


def test_tiff_tiles_much_larger_than_the_image_are_refused():
    """OpenCV allocates one tile: 8192 x 8192 tiles on a 100 x 100 image cost 256 MB for a 2 KB file."""

    def tiled(tile: int) -> bytes:
        tags = [
            (256, 4, 1, 100),
            (257, 4, 1, 100),
            (258, 3, 1, 16),
            (262, 3, 1, 2),
            (277, 3, 1, 4),
            (322, 4, 1, tile),
            (323, 4, 1, tile),
            (324, 4, 1, 200),
            (325, 4, 1, 1000),
        ]
        ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + bytes(4)
        return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(2000)

    assert read_header(bytes_source(tiled(256)), "x").width == 100  # ordinary tiles are fine
    with pytest.raises(InputError, match="tiles of 8192 x 8192 pixels for an image of 100 x 100"):
        decode_image(tiled(8192))


def _supported_encodings() -> dict[str, tuple[bytes, np.ndarray]]:
    """Small images in every format lbedge reads, as OpenCV writes them, with what they decode to."""
    rgb = _rgb()
    grey16 = rgb[..., 0].astype(np.uint16) * 257
    cases = {
        "png": _encode(".png", rgb),
        "png16": _encode(".png", grey16),
        "jpeg": _encode(".jpg", rgb),
        "jpeg-progressive": _encode(".jpg", rgb, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "bmp": _encode(".bmp", rgb),
        "webp": _encode(".webp", rgb),
        "webp-lossless": _encode(".webp", rgb, cv2.IMWRITE_WEBP_QUALITY, 101),
        "tiff": _encode(".tiff", rgb),
        "tiff16": _encode(".tiff", grey16),
        "ppm": _encode(".ppm", rgb),
        "pgm-ascii": _encode(".pgm", rgb[..., 0], cv2.IMWRITE_PXM_BINARY, 0),
        "pbm": _encode(".pbm", rgb[..., 0]),
        "gif": _encode(".gif", rgb),
    }
    return {k: (v, cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_UNCHANGED)) for k, v in cases.items()}


ENCODED = _supported_encodings()


@pytest.mark.parametrize("kind", sorted(ENCODED))
def test_every_supported_format_is_measured_and_decoded(kind, tmp_path):
    data, expected = ENCODED[kind]
    header = read_header(bytes_source(data), kind)
    assert (header.height, header.width) == expected.shape[:2]
    np.testing.assert_array_equal(decode_image(data, cv2.IMREAD_UNCHANGED), expected)
    path = tmp_path / f"x.{kind}"
    path.write_bytes(data)
    np.testing.assert_array_equal(decode_image(path, cv2.IMREAD_UNCHANGED), expected)
    if expected.dtype == np.uint8:
        assert IMG(data).shape == (1, 3, 224, 224)
    else:
        assert DEPTH(data).shape == (1, 3, 224, 224)


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="official sample media not found")
@pytest.mark.parametrize("name", ["image/0.jpg", "image/1.jpg", "thermal/0.jpg", "depth/0.png", "depth/1.png"])
def test_official_samples_are_measured_correctly(name):
    data = (SAMPLES / name).read_bytes()
    header = read_header(bytes_source(data), name)
    assert (header.height, header.width) == decode_image(data, cv2.IMREAD_UNCHANGED).shape[:2]


@pytest.mark.parametrize("ext", [".hdr", ".pfm", ".jp2", ".ras", ".avif", ".pam"])
def test_formats_lbedge_cannot_measure_are_refused(ext):
    """OpenCV decodes these, but lbedge cannot read their size first: refused, never handed to OpenCV."""
    img = _rgb().astype(np.float32) / 255 if ext in (".hdr", ".pfm") else _rgb()
    try:
        data = _encode(ext, img)
    except cv2.error:
        pytest.skip(f"this OpenCV build cannot write {ext}")
    with pytest.raises(InputError, match="not an image format lbedge reads.*PNG, JPEG"):
        IMG(data)


@pytest.mark.parametrize("data", [b"", bytearray(), memoryview(b"")])
def test_empty_image_bytes_are_a_clear_error(data):
    with pytest.raises(InputError, match="empty"):
        IMG(data)
    with pytest.raises(InputError, match="empty"):
        DEPTH(data)


@pytest.mark.parametrize(
    "data,match",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG data is truncated"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG data is truncated"),
        (b"\xff\xd8\xff\xda\x00\x08", "JPEG data is truncated"),
        (b"II*\x00\xff\xff\xff\x00", "TIFF data is truncated"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8Z", "WebP data is truncated"),
        (b"P6\n# only a comment\n", "PNM data is truncated"),
        (b"P6\n0 10\n255\n" + bytes(32), "0 x 10"),
        (b"GIF89a\x05", "GIF data is truncated"),
        (b"II+\x00\x08\x00\x00\x00" + b"\xff" * 8, "TIFF data is truncated"),  # a directory at 2**64 - 1
        (b"MM\x00*\xff\xff\xff\xf0" + bytes(8), "TIFF data is truncated"),
        (b"hello, world", "not an image format lbedge reads"),
    ],
)
def test_unreadable_headers_are_refused(data, match, tmp_path):
    path = tmp_path / "bad.img"
    path.write_bytes(data)
    for source in (data, path):
        with pytest.raises(InputError, match=match):
            decode_image(source)


def test_opencv_errors_become_input_errors(monkeypatch):
    def broken(*args, **kw):
        raise cv2.error("OpenCV(5.0.0) imgcodecs: something failed")

    monkeypatch.setattr(cv2, "imdecode", broken)
    with pytest.raises(InputError, match="something failed"):
        decode_image(ENCODED["png"][0])


def test_raising_and_lowering_the_pixel_limit(set_limits, tmp_path):
    rgb = _rgb(300, 200)
    data = _encode(".png", rgb[..., ::-1])
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert lblimits.limits().max_image_pixels >= 60000
    expected = IMG(rgb)
    set_limits(max_image_pixels=59999)
    for source in (rgb, data, str(path)):
        with pytest.raises(InputError, match=r"200 x 300 = 60000 pixels.*LBEDGE_MAX_IMAGE_PIXELS"):
            IMG(source)
    with pytest.raises(InputError, match="max_image_pixels"):
        DEPTH(np.zeros((300, 200), np.uint16))
    set_limits(max_image_pixels=60000)
    np.testing.assert_array_equal(IMG(data), expected)
    np.testing.assert_array_equal(IMG(str(path)), expected)


# --- 3. audio duration, rate and header checks ------------------------------------------------------------


def test_audio_duration_limit_on_files_and_arrays(set_limits, tmp_path, audio_reader):
    path = tmp_path / "two_seconds.wav"
    path.write_bytes(_wav_bytes(np.round(_tone(16000, 2.0) * 32767).astype("<i2"), 16000))
    assert AUDIO(str(path)).shape == (1, 3, 112, 1036)
    set_limits(max_audio_seconds=1.5)
    with pytest.raises(InputError, match=r"lasts 2\.0 s.*max_audio_seconds.*LBEDGE_MAX_AUDIO_SECONDS"):
        AUDIO(str(path))
    with pytest.raises(InputError, match="max_audio_seconds"):
        read_audio_file(path)
    with pytest.raises(InputError, match="max_audio_seconds"):
        AUDIO((_tone(16000, 2.0), 16000))
    with pytest.raises(InputError, match="max_audio_seconds"):
        AUDIO(_tone(48000, 1.6), sample_rate=48000)
    assert AUDIO((_tone(16000, 1.5), 16000)).shape == (1, 3, 112, 1036)  # exactly at the limit
    set_limits(max_audio_seconds=2.0)
    assert AUDIO(str(path)).shape == (1, 3, 112, 1036)


def test_audio_header_claiming_more_data_than_the_file_holds(tmp_path, audio_reader):
    """A WAV header claiming 4 GB of samples on a one-second file reads what is there, in bounded memory."""
    pcm = np.round(_tone(16000, 1.0) * 32767).astype("<i2").tobytes()
    data = bytearray(_wav_bytes(np.frombuffer(pcm, "<i2"), 16000))
    data[40:44] = struct.pack("<I", 0xFFFFFFF0)  # the data chunk's size
    path = tmp_path / "lying.wav"
    path.write_bytes(bytes(data))
    clip, peak, _ = _peak_bytes(read_audio_file, path)
    assert not isinstance(clip, Exception), clip
    assert clip.samples.shape == (1, 16000) and peak < 16 * 2**20


@pytest.mark.parametrize(
    "header,match",
    [
        (dict(rate=0), "sample rate|cannot read"),
        (dict(rate=4_000_000_000), "sample rate|cannot read"),
        (dict(rate=1_000_000), "above the 768000 Hz"),
        (dict(channels=0), "channels|cannot read"),
        (dict(channels=1000), "1000 channels|cannot read"),
        (dict(bits=40), "sample width|cannot read|unimplemented"),
        (dict(bits=64), "sample width|cannot read|unimplemented"),
        (dict(frames=0), "empty"),
        (dict(frames=1), "too short"),
        (dict(fmt=0x55), "cannot read"),
    ],
)
def test_bad_wav_headers_are_clear_errors(header, match, tmp_path, audio_reader):
    path = tmp_path / "bad.wav"
    path.write_bytes(_raw_wav(**header))
    with pytest.raises(InputError, match=match):
        AUDIO(str(path))


@pytest.mark.parametrize(
    "rate,match",
    [
        (float("nan"), "invalid sample rate"),
        ("fast", "invalid sample rate"),
        (10**9, "above the 768000 Hz"),
        (-1, "invalid sample rate"),
    ],
)
def test_bad_sample_rates_of_arrays_are_clear_errors(rate, match):
    with pytest.raises(InputError, match=match):
        AUDIO((np.zeros(16000, np.float32), rate))


def test_multichannel_files_are_downmixed_while_reading(tmp_path, audio_reader):
    rng = np.random.default_rng(3)
    pcm = rng.integers(-20000, 20000, (16000 * 3 + 11, 4)).astype("<i2")
    path = tmp_path / "four.wav"
    path.write_bytes(_wav_bytes(pcm, 16000, channels=4))
    full = read_audio_file(path)
    mono = read_audio_file(path, mono=True)
    assert full.samples.shape == (4, pcm.shape[0]) and mono.samples.shape == (1, pcm.shape[0])
    np.testing.assert_array_equal(mono.samples, full.samples.mean(axis=0, keepdims=True))
    np.testing.assert_array_equal(AUDIO(str(path)), AUDIO(full))


# --- 4. video: bounded decoding whatever the container says ----------------------------------------------


def _write_video(path: Path, n: int, h: int = 120, w: int = 160) -> list[np.ndarray]:
    frames = [np.full((h, w, 3), (9 * i) % 256, np.uint8) for i in range(n)]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for f in frames:
        wr.write(f)
    wr.release()
    return frames


class _MisreportingCapture:
    """A real capture whose declared frame count is replaced (0: unknown), counting retrieved frames."""

    retrieved = 0

    def __init__(self, declared, *args):
        self._cap, self._declared = _REAL_CAPTURE(*args), declared

    def get(self, prop):
        return float(self._declared) if prop == cv2.CAP_PROP_FRAME_COUNT else self._cap.get(prop)

    def retrieve(self):
        type(self).retrieved += 1
        return self._cap.retrieve()

    def __getattr__(self, name):
        return getattr(self._cap, name)


_REAL_CAPTURE = cv2.VideoCapture


@pytest.mark.parametrize("declared", [0, 45, 10**9])
def test_video_with_unknown_or_wrong_frame_count_keeps_only_sampled_frames(declared, tmp_path, monkeypatch, set_limits):
    path = tmp_path / "clip.avi"
    _write_video(path, 30)
    expected = VIDEO(str(path))
    set_limits(max_video_frames=10**9)
    _MisreportingCapture.retrieved = 0
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: _MisreportingCapture(declared, *a))
    np.testing.assert_array_equal(VIDEO(str(path)), expected)
    # only sampled frames are converted: 8, plus those of a first try cut short by an overstated count
    assert _MisreportingCapture.retrieved <= (8 if declared == 0 else 16)


def test_video_frame_and_size_limits(tmp_path, monkeypatch, set_limits):
    path = tmp_path / "clip.avi"
    _write_video(path, 20)
    set_limits(max_video_frames=19)
    with pytest.raises(InputError, match="declares 20 frames.*max_video_frames"):
        VIDEO(str(path))
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: _MisreportingCapture(0, *a))
    with pytest.raises(InputError, match="more than 19 frames.*max_video_frames"):
        VIDEO(str(path))
    set_limits(max_video_frames=20)
    assert VIDEO(str(path)).shape == (1, 3, 8, 224, 224)
    set_limits(max_image_pixels=160 * 120 - 1)
    with pytest.raises(InputError, match="160 x 120.*max_image_pixels"):
        VIDEO(str(path))


# --- 5. fault corpus ------------------------------------------------------------------------------------------


def _seed_files() -> dict[str, list[bytes]]:
    """Real files of each kind the fuzzer starts from (the official samples too, when present)."""
    rgb = _rgb(48, 64)
    depth = (np.add.outer(np.arange(48), np.arange(64)) * 40 + 300).astype(np.uint16)
    seeds = {
        "image": [
            _encode(".png", rgb),
            _encode(".jpg", rgb),
            _encode(".jpg", rgb, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
            _encode(".tiff", rgb),
            _encode(".bmp", rgb),
            _encode(".webp", rgb),
            _encode(".gif", rgb),
        ],
        "depth": [_encode(".png", depth), _encode(".tiff", depth)],
        "audio": [
            _wav_bytes(np.round(_tone(16000, 0.5) * 32767).astype("<i2"), 16000),
            _wav_bytes(np.round(_tone(22050, 0.3) * 32767).astype("<i2"), 22050),
            _wav_bytes(
                np.round(np.stack([_tone(8000, 0.4)] * 2, axis=1) * 127 + 128).astype(np.uint8),
                8000,
                channels=2,
                width=1,
            ),
            _wav_bytes(_pcm24(_tone(44100, 0.2)), 44100, width=3),
        ],
    }
    if SAMPLES.is_dir():
        seeds["image"].append((SAMPLES / "image" / "0.jpg").read_bytes())
        seeds["depth"].append((SAMPLES / "depth" / "0.png").read_bytes())
    return seeds


def _pcm24(x: np.ndarray) -> np.ndarray:
    """float samples -> 24-bit little-endian PCM bytes, as a uint8 array."""
    v = np.round(x * (2**23 - 1)).astype("<i4").view(np.uint8).reshape(-1, 4)
    return np.ascontiguousarray(v[:, :3])


SEEDS = _seed_files()


@st.composite
def mutated(draw, modality: str) -> bytes:
    """A seed file of ``modality`` with a few byte-level mutations: flips, overwrites, insertions,
    deletions, truncation, and fields set to extreme values."""
    data = bytearray(draw(st.sampled_from(SEEDS[modality])))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "extreme", "insert", "delete", "truncate", "splice"]))
        # most of what a decoder trusts is in the first bytes: aim there more often
        limit = draw(st.sampled_from([64, 512, len(data)]))
        at = draw(st.integers(0, max(0, min(limit, len(data)) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "extreme":
            data[at : at + 4] = draw(
                st.sampled_from(
                    [
                        b"\xff\xff\xff\xff",
                        b"\x00\x00\x00\x00",
                        b"\x7f\xff\xff\xff",
                        b"\x00\x00\x80\x00",
                        b"\xff\xff\x00\x00",
                    ]
                )
            )
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            data[at : at + 16] = draw(st.binary(min_size=16, max_size=16))
    return bytes(data)


def _peak_rss() -> int:
    """The process's peak resident memory so far, in bytes (it sees what OpenCV and libsndfile allocate);
    0 where the ``resource`` module does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _assert_safe(pre: Preprocessor, source) -> None:
    """The preprocessor returns a finite float32 batch of one, or raises InputError: nothing else; and it
    never raises the process's peak memory by more than what the lowered limits allow."""
    before = _peak_rss()
    try:
        out = pre(source)
    except InputError:
        out = None
    grown = _peak_rss() - before
    assert grown < 384 * 2**20, f"peak memory grew by {grown / 2**20:.0f} MiB"
    if out is not None:
        assert out.dtype == np.float32 and out.shape == (1, *pre.input_shape)
        assert np.isfinite(out).all()


FUZZ = settings(
    deadline=None,
    max_examples=300,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# a mutated header may ask for any size up to the limits: lower them so that every example stays quick
FUZZ_LIMITS = dict(max_image_pixels=4 * 2**20, max_audio_seconds=60.0)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _as_source(data: bytes, as_file: bool, path: Path):
    """The bytes themselves, or a file holding them."""
    if not as_file:
        return data
    path.write_bytes(data)
    return path


@pytest.mark.timeout(60)
@FUZZ
@given(data=mutated("image"), as_file=st.booleans())
def test_fuzzed_images(data, as_file, fuzz_dir):
    with _limited(**FUZZ_LIMITS):
        _assert_safe(IMG, _as_source(data, as_file, fuzz_dir / "image.bin"))


@pytest.mark.timeout(60)
@FUZZ
@given(data=mutated("depth"), as_file=st.booleans())
def test_fuzzed_depth_maps(data, as_file, fuzz_dir):
    with _limited(**FUZZ_LIMITS):
        _assert_safe(DEPTH, _as_source(data, as_file, fuzz_dir / "depth.bin"))


@pytest.mark.timeout(60)
@FUZZ
@given(data=mutated("audio"))
def test_fuzzed_wav_files(data, fuzz_dir):
    with _limited(**FUZZ_LIMITS):
        _assert_safe(AUDIO, _as_source(data, True, fuzz_dir / "audio.wav"))


SIGNATURES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"BM",
    b"RIFF\x10\x00\x00\x00WEBPVP8",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00\x08\x00\x00\x00",
    b"P5 ",
    b"P1\n",
    b"GIF89a",
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
]


@pytest.mark.timeout(60)
@settings(deadline=None, max_examples=500, database=None)
@given(prefix=st.sampled_from(SIGNATURES), tail=st.binary(max_size=600))
def test_random_bytes_after_any_signature(prefix, tail, fuzz_dir):
    data = prefix + tail
    path = _as_source(data, True, fuzz_dir / "random.bin")
    with _limited(**FUZZ_LIMITS):
        _assert_safe(IMG, data)
        _assert_safe(IMG, path)
        _assert_safe(DEPTH, data)
        _assert_safe(AUDIO, path)
