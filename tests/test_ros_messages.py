"""ROS 2 sensor messages as frames (lbedge.sensors.ros_messages), on messages built by rosbags from their fields:
every supported image encoding with padded rows and both byte orders, REP 118 depth, radiometric thermal,
compressed images and depth, audio_common_msgs PCM in windows stamped by their samples."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lbedge import InputError, SensorError
from lbedge.sensors.ros_messages import (
    AUDIO_DATA,
    AUDIO_DATA_STAMPED,
    COMPRESSED_IMAGE,
    IMAGE,
    AudioFormat,
    AudioWindower,
    DecodeOptions,
    MessageDecoder,
    guess_modality,
    modality_name,
    normalize_type,
)

pytest.importorskip("rosbags", reason="rosbags is not installed (lbedge[ros])")
from ros_recordings import BASE_NS, audio_stamped, compressed, image, typestore  # noqa: E402

TS = typestore()
RGB = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3


def decode(msg, modality, options=None, msgtype=IMAGE):
    return MessageDecoder(msgtype, modality, options, topic="/t").decode(msg, BASE_NS + 999)


@pytest.mark.parametrize(
    "encoding, arr",
    [
        ("rgb8", RGB),
        ("bgr8", RGB[..., ::-1]),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
        ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 7, np.uint8)])),
    ],
)
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_images_are_rgb_whatever_the_encoding_and_row_padding(encoding, arr, pad):
    (d,) = decode(image(TS, BASE_NS, "cam", arr, encoding, pad=pad), "image")
    assert d.data.dtype == np.uint8 and np.array_equal(d.data, RGB)
    assert d.stamp_ns == BASE_NS and d.meta["stamp_ns"] == BASE_NS  # exact, not through a float
    assert d.meta["frame_id"] == "cam" and d.meta["encoding"] == encoding and d.units == "rgb8"
    assert d.meta["log_time_ns"] == BASE_NS + 999 and d.meta["topic"] == "/t"


def test_grey_and_yuv422_images():
    grey = RGB[..., 0]
    (d,) = decode(image(TS, BASE_NS, "cam", grey, "mono8"), "image")
    assert np.array_equal(d.data, np.repeat(grey[..., None], 3, axis=2))
    bgr = cv2.cvtColor(np.full((4, 6, 3), (40, 120, 200), np.uint8), cv2.COLOR_RGB2BGR)
    yuyv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_YUY2) if hasattr(cv2, "COLOR_BGR2YUV_YUY2") else None
    if yuyv is None:
        pytest.skip("this OpenCV cannot encode YUYV")
    (d,) = decode(image(TS, BASE_NS, "cam", yuyv.reshape(4, 6, 2), "yuv422_yuy2"), "image")
    assert d.data.shape == (4, 6, 3) and np.abs(d.data.astype(int) - (40, 120, 200)).max() <= 3


@pytest.mark.parametrize("big_endian", [False, True])
def test_depth_16uc1_is_millimetres_with_zero_as_no_data(big_endian):
    mm = np.array([[0, 500, 1000], [2500, 65535, 1]], np.uint16)
    (d,) = decode(image(TS, BASE_NS, "depth", mm, "16UC1", big_endian=big_endian, pad=2), "depth")
    assert d.data.dtype == np.uint16 and np.array_equal(d.data, mm) and d.units == "mm"


def test_depth_32fc1_metres_become_millimetres_with_nan_for_no_data():
    m = np.array([[1.5, np.nan, np.inf], [-np.inf, 0.0, 0.25]], np.float32)
    (d,) = decode(image(TS, BASE_NS, "depth", m, "32FC1"), "depth")
    assert d.data.dtype == np.float32
    assert d.data[0, 0] == pytest.approx(1500.0) and d.data[1, 2] == pytest.approx(250.0)
    assert np.isnan(d.data[[0, 0, 1, 1], [1, 2, 0, 1]]).all()  # NaN, +-Inf and 0 m: no data


def test_radiometric_thermal_mono16_keeps_temperatures():
    kelvin = np.array([[29315, 30315], [31315, 37315]], np.uint16)  # centikelvin: 20, 30, 40, 100 degC
    (d,) = decode(image(TS, BASE_NS, "thermal", kelvin, "mono16"), "thermal", DecodeOptions(agc="minmax"))
    assert d.data.shape == (2, 2, 3) and d.data.dtype == np.uint8 and d.units == "agc8"
    assert d.data[0, 0, 0] == 0 and d.data[1, 1, 0] == 255  # coldest black, hottest white
    assert np.allclose(d.meta["celsius"], [[20, 30], [40, 100]], atol=1e-3)
    assert np.array_equal(d.meta["raw"], kelvin)
    (b,) = decode(image(TS, BASE_NS, "t", kelvin, "mono16"), "thermal", DecodeOptions(thermal_profile="boson"))
    assert b.meta["celsius"] is None and b.data.shape == (2, 2, 3)  # counts: gain control only
    (g,) = decode(image(TS, BASE_NS, "t", RGB[..., 0], "mono8"), "thermal")  # a camera's own 8-bit picture
    assert np.array_equal(g.data[..., 0], RGB[..., 0])


def test_compressed_images_and_compressed_depth():
    ok, jpg = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    (d,) = decode(compressed(TS, BASE_NS, "cam", jpg.tobytes(), "rgb8; png compressed bgr8"), "image", None,
                  COMPRESSED_IMAGE)  # fmt: skip
    assert np.array_equal(d.data, RGB) and d.meta["frame_id"] == "cam"
    mm = np.array([[0, 800], [1200, 4000]], np.uint16)
    header = np.array([(0, 0.0, 0.0)], [("f", "<i4"), ("a", "<f4"), ("b", "<f4")]).tobytes()
    payload = header + cv2.imencode(".png", mm)[1].tobytes()
    msg = compressed(TS, BASE_NS, "depth", payload, "16UC1; compressedDepth png")
    assert guess_modality(COMPRESSED_IMAGE, msg) == "depth"
    (d,) = decode(msg, "depth", None, COMPRESSED_IMAGE)
    assert np.array_equal(d.data, mm)
    # 32FC1: quantised inverse depth, v = a / depth_m + b; 0 means no data
    a, b = 100.0, -10.0
    metres = np.array([[2.0, 4.0], [5.0, 0.0]])
    inv = np.where(metres > 0, np.rint(a / np.where(metres > 0, metres, 1) + b), 0).astype(np.uint16)
    header = np.array([(0, a, b)], [("f", "<i4"), ("a", "<f4"), ("b", "<f4")]).tobytes()
    msg = compressed(TS, BASE_NS, "depth", header + cv2.imencode(".png", inv)[1].tobytes(), "32FC1; compressedDepth")
    (d,) = decode(msg, "depth", None, COMPRESSED_IMAGE)
    assert np.allclose(d.data[0], [2000.0, 4000.0], rtol=0.02) and np.isnan(d.data[1, 1])
    rvl = compressed(TS, BASE_NS, "depth", header + b"RVL-not-png-data", "16UC1; compressedDepth rvl")
    with pytest.raises(InputError, match="RVL"):
        decode(rvl, "depth", None, COMPRESSED_IMAGE)


def test_damaged_or_unsupported_images_say_why():
    msg = image(TS, BASE_NS, "cam", RGB, "rgb8")
    msg.data = msg.data[:-10]  # truncated
    with pytest.raises(InputError, match="needs 72 bytes, got 62"):
        decode(msg, "image")
    with pytest.raises(InputError, match="encoding 'bayer_rggb8' is not supported"):
        decode(image(TS, BASE_NS, "cam", RGB[..., 0], "bayer_rggb8"), "image")
    with pytest.raises(InputError, match="not depth"):
        decode(image(TS, BASE_NS, "cam", RGB, "rgb8"), "depth")
    with pytest.raises(InputError, match="depth or thermal"):
        decode(image(TS, BASE_NS, "cam", RGB[..., 0].astype(np.uint16), "mono16"), "image")
    with pytest.raises(SensorError, match="cannot be audio frames"):
        MessageDecoder(IMAGE, "audio")


def test_modalities_and_types_as_people_write_them():
    assert normalize_type("sensor_msgs/Image") == IMAGE == normalize_type("sensor_msgs/msg/Image")
    assert modality_name("RGB") == "image" and modality_name("depth") == "depth"
    with pytest.raises(InputError, match="unknown modality"):
        modality_name("lidar")
    guesses = {enc: guess_modality(IMAGE, image(TS, 0, "", RGB[..., 0].astype(dt), enc))
               for enc, dt in (("rgb8", np.uint8), ("mono8", np.uint8), ("16UC1", np.uint16), ("mono16", np.uint16),
                               ("32FC1", np.float32))}  # fmt: skip
    assert guesses == {"rgb8": "image", "mono8": "image", "16UC1": "depth", "mono16": "thermal", "32FC1": "depth"}
    assert guess_modality("audio_common_msgs/AudioData", None) == "audio"


def test_audio_windows_are_stamped_by_their_samples():
    rate, chunk = 16000, 1600  # 0.1 s chunks
    dec = MessageDecoder(AUDIO_DATA_STAMPED, "audio", DecodeOptions(window=1.0, hop=0.5), topic="/audio")
    out = []
    for i in range(25):  # 2.5 s: windows end at 1.0, 1.5, 2.0, 2.5 s
        pcm = np.full(chunk, i * 100, np.int16)
        out += dec.decode(audio_stamped(TS, BASE_NS + i * 10**8, "mic", pcm), BASE_NS + i * 10**8 + 5)
    assert [d.stamp_ns - BASE_NS for d in out] == [10**9, 15 * 10**8, 2 * 10**9, 25 * 10**8]
    assert all(d.data.shape == (1, rate) and d.meta["sample_rate"] == rate for d in out)
    assert all(d.meta["frame_id"] == "mic" for d in out)
    # the window ending at 1.5 s holds chunks 5..14 in order, scaled to [-1, 1]
    assert np.allclose(out[1].data[0, ::chunk], np.arange(5, 15) * 100 / 32768.0)
    assert dec.flush() == []  # windows were delivered: nothing left to flush


def test_audio_formats_partial_frames_and_short_recordings():
    fmt = AudioFormat(8000, 2, "F32LE")
    w = AudioWindower(fmt, window=0.5, hop=0.25)
    stereo = np.stack([np.linspace(-1, 1, 4000), np.zeros(4000)], axis=1).astype("<f4").tobytes()
    a = w.push(stereo[:1001], 0)  # a chunk that ends inside a sample: the rest waits for the next chunk
    b = w.push(stereo[1001:], 0)
    assert a == [] and len(b) == 1 and b[0][0].shape == (2, 4000) and np.allclose(b[0][0][1], 0)
    assert np.allclose(b[0][0][0], np.linspace(-1, 1, 4000))
    short = AudioWindower(AudioFormat(16000), window=2.0, hop=1.0)
    assert short.push(np.zeros(800, "<i2").tobytes(), 7) == []
    (tail,) = short.flush()
    assert tail[0].shape == (1, 800) and tail[1] == 7 + 50_000_000  # a recording shorter than one window
    assert AudioFormat.parse("44100:2:s32le") == AudioFormat(44100, 2, "s32le")
    with pytest.raises(SensorError, match="format:=wave"):
        AudioFormat(coding_format="mp3")
    with pytest.raises(SensorError, match="not supported"):
        AudioFormat(sample_format="S24_32LE")
    with pytest.raises(SensorError, match="RATE"):
        AudioFormat.parse("fast")
    # AudioData has no header: the message's receive (or recording) time stands in, frame from the options
    dec = MessageDecoder(AUDIO_DATA, "audio", DecodeOptions(window=0.1, hop=0.1, frame_id="mic_link"))
    msg = TS.types["audio_common_msgs/msg/AudioData"](data=np.zeros(3200, np.uint8))
    (d,) = dec.decode(msg, BASE_NS)
    assert d.stamp_ns == BASE_NS + 100_000_000 and d.meta["frame_id"] == "mic_link"
