"""Preprocessing accepts every documented input kind and rejects unusable input with one clear error."""

from __future__ import annotations

import wave

import cv2
import numpy as np
import pytest

from conftest import SAMPLES, needs_samples
from lbedge import InputError, PreprocessConfig, Preprocessor

IMG = Preprocessor(PreprocessConfig("image"))
DEPTH = Preprocessor(PreprocessConfig("depth"))
AUDIO = Preprocessor(PreprocessConfig("audio"))
VIDEO = Preprocessor(PreprocessConfig("video", interpolation="bilinear"))


def _rgb(h=300, w=200, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_image_array_path_pil_bytes_agree(tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow not installed (PIL inputs are optional)")

    rgb = _rgb()
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    a = IMG(rgb)
    assert a.shape == (1, 3, 224, 224) and a.dtype == np.float32
    np.testing.assert_array_equal(IMG(str(path)), a)
    np.testing.assert_array_equal(IMG(path.read_bytes()), a)
    np.testing.assert_array_equal(IMG(Image.fromarray(rgb)), a)
    np.testing.assert_array_equal(IMG(rgb[..., ::-1].copy(), bgr=True), a)
    # uint8 frames are resized before the 1/255 scaling (cheaper), floats after: float32 rounding apart
    np.testing.assert_allclose(IMG(rgb.astype(np.float32) / 255), a, atol=5e-6)


def test_image_batches_and_channel_handling():
    rgb = _rgb()
    assert IMG([rgb, rgb, rgb]).shape == (3, 3, 224, 224)
    assert IMG(np.stack([rgb, rgb])).shape == (2, 3, 224, 224)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(IMG(grey), IMG(np.repeat(grey[..., None], 3, axis=2)))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(IMG(rgba), IMG(rgb))


def test_preprocessing_is_deterministic():
    rgb = _rgb(480, 640, seed=5)
    np.testing.assert_array_equal(IMG(rgb), IMG(rgb))


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((10, 10, 2), np.uint8), "1, 3 or 4 colour channels"),
        (np.zeros((0, 10, 3), np.uint8), "HxW or HxWxC"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.full((8, 8, 3), 200.0, np.float32), r"\[0, 1\]"),
        (np.zeros((8, 8, 3), np.uint16), "16-bit"),
        (np.zeros((8, 8, 3), bool), "dtype"),
        (12345, "unsupported image input"),
        (b"\x89PNG\r\n\x1a\nnot really", "cannot decode"),
        (b"", "empty"),
        (b"GIF89a", "cannot decode"),
    ],
)
def test_image_rejects_unusable_input(bad, match):
    with pytest.raises(InputError, match=match):
        IMG(bad)


def test_image_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        IMG(str(tmp_path / "missing.jpg"))
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="cannot decode"):
        IMG(str(tmp_path / "empty.jpg"))
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(InputError, match="cannot decode"):
        IMG(str(tmp_path / "text.jpg"))
    with pytest.raises(InputError, match="empty input list"):
        IMG([])


@needs_samples
def test_truncated_jpeg_is_an_error_or_a_decoded_image(tmp_path):
    """OpenCV decodes truncated JPEGs partially (grey fill): lbedge must not crash on them."""
    data = (SAMPLES / "image" / "0.jpg").read_bytes()
    bad = tmp_path / "trunc.jpg"
    bad.write_bytes(data[:200])
    with pytest.raises(InputError):
        IMG(str(bad))


def test_depth_inputs_and_units():
    mm = np.full((240, 320), 2500, np.uint16)  # 2.5 m everywhere
    out = DEPTH(mm)
    assert out.shape == (1, 3, 224, 224)
    mean, std = np.array(PreprocessConfig("depth").mean), np.array(PreprocessConfig("depth").std)
    np.testing.assert_allclose(out[0, :, 100, 100], (0.25 - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(DEPTH(mm.astype(np.float32)), out)
    holes = mm.astype(np.float32)
    holes[:10] = np.nan  # invalid pixels are treated like 0 (min depth)
    zeros = mm.copy()
    zeros[:10] = 0
    np.testing.assert_array_equal(DEPTH(holes), DEPTH(zeros))
    assert DEPTH(np.stack([mm, mm])).shape == (2, 3, 224, 224)
    assert DEPTH(mm[..., None]).shape == (1, 3, 224, 224)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((10, 10), np.uint8), "8-bit depth"),
        (np.zeros((10, 10, 3), np.uint16), "single-channel"),
    ],
)
def test_depth_rejects_unusable_input(bad, match):
    with pytest.raises(InputError, match=match):
        DEPTH(bad)


def _tone(sr=16000, seconds=2.0, f=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_audio_input_kinds_agree(tmp_path):
    x = _tone()
    a = AUDIO((x, 16000))
    assert a.shape == (1, 3, 112, 1036) and a.dtype == np.float32
    np.testing.assert_array_equal(AUDIO(x, sample_rate=16000), a)
    np.testing.assert_array_equal(AUDIO({"array": x, "sampling_rate": 16000}), a)
    pcm = np.round(x * 32767).astype(np.int16)
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm.tobytes())
    np.testing.assert_allclose(AUDIO(str(path)), AUDIO((pcm, 16000)), atol=1e-6)
    # int16 quantisation noise only shows in near-silent mel bins
    assert np.corrcoef(AUDIO((pcm, 16000)).ravel(), a.ravel())[0, 1] > 0.99
    stereo = np.stack([x, x], axis=1)  # [samples, channels]
    np.testing.assert_allclose(AUDIO((stereo, 16000)), a, atol=1e-6)
    assert AUDIO([(x, 16000), (x, 16000)]).shape == (2, 3, 112, 1036)


def test_audio_resampled_input_matches_native_rate():
    native = AUDIO((_tone(16000), 16000))
    resampled = AUDIO((_tone(48000), 48000))
    assert np.corrcoef(native.ravel(), resampled.ravel())[0, 1] > 0.999


def test_silence_is_valid_audio():
    out = AUDIO((np.zeros(16000, np.float32), 16000))
    assert np.isfinite(out).all()


@pytest.mark.parametrize(
    "bad,kw,match",
    [
        ((np.zeros(0, np.float32), 16000), {}, "empty"),
        ((np.zeros(100, np.float32), 16000), {}, "too short"),
        ((np.full(16000, np.nan, np.float32), 16000), {}, "NaN"),
        (np.zeros(16000, np.float32), {}, "sample rate"),
        ((np.zeros(16000, np.float32), 0), {}, "invalid sample rate"),
        ((np.zeros((2, 2, 16000), np.float32), 16000), {}, "1-D"),
        ((np.zeros(16000, np.uint8), 16000), {}, "dtype"),
    ],
)
def test_audio_rejects_unusable_input(bad, kw, match):
    with pytest.raises(InputError, match=match):
        AUDIO(bad, **kw)


def test_audio_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        AUDIO(str(tmp_path / "none.wav"))
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(InputError, match="cannot read"):
        AUDIO(str(tmp_path / "bad.wav"))


def _smooth_frame(i, h=120, w=160):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 1.5 + 9 * i) % 256, (y * 2 + 5 * i) % 256, np.full_like(x, 12 * i % 256)], axis=2).astype(
        np.uint8
    )


def test_video_frames_array_and_file_agree(tmp_path):
    frames = [_smooth_frame(i) for i in range(20)]
    a = VIDEO(frames)  # one clip as a list of frames
    assert a.shape == (1, 3, 8, 224, 224)
    np.testing.assert_array_equal(VIDEO(np.stack(frames)), a)
    picked = [frames[i] for i in np.linspace(0, 19, 8, dtype=int)]
    np.testing.assert_array_equal(VIDEO(picked), a)
    assert VIDEO([np.stack(frames), np.stack(frames)]).shape == (2, 3, 8, 224, 224)
    path = tmp_path / "clip.avi"
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for f in frames:
        wr.write(f[..., ::-1])
    wr.release()
    from_file = VIDEO(str(path))
    assert from_file.shape == (1, 3, 8, 224, 224)
    assert np.abs(from_file - a).mean() < 0.1  # MJPEG is lossy; same frames, same order


def test_video_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        VIDEO(str(tmp_path / "none.mp4"))
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="cannot open|no decodable"):
        VIDEO(str(tmp_path / "bad.mp4"))
    with pytest.raises(InputError, match="unsupported video input"):
        VIDEO(42)
