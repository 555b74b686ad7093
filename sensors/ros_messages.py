"""ROS 2 sensor messages as frame data, without ROS: ``sensor_msgs/Image`` and ``CompressedImage`` (RGB; depth per
REP 118, ``16UC1`` millimetres or ``32FC1`` metres with NaN for no data; radiometric 16-bit thermal) and
``audio_common_msgs`` audio (``AudioData``, ``AudioDataStamped``; raw PCM in the format ``AudioFormat`` states).

Fields are read by name, so a message from rclpy and one deserialised by rosbags decode alike. A message's time is
its header stamp (integer nanoseconds, kept exact in ``meta["stamp_ns"]``), or its recording/receive time when it
has no header or an unset stamp. :class:`MessageDecoder` turns one topic's messages into frame data; the replay
source (:mod:`lbedge.sensors.rosbag`) and the live topic source (:mod:`lbedge.sensors.ros_topic`) share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from lbedge.errors import InputError, SensorError
from lbedge.preprocess.image import check_pixels, decode_image

from .audio import check_window
from .thermal import AGC_METHODS, PROFILES, agc, check_agc

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
AUDIO_DATA = "audio_common_msgs/msg/AudioData"
AUDIO_DATA_STAMPED = "audio_common_msgs/msg/AudioDataStamped"
AUDIO_INFO = "audio_common_msgs/msg/AudioInfo"
#: the message types lbedge classifies
SENSOR_TYPES = (IMAGE, COMPRESSED_IMAGE, AUDIO_DATA, AUDIO_DATA_STAMPED)

#: audio_common_msgs (ros-drivers/audio_common, ros2 branch): not in the standard type stores, registered from these
AUDIO_COMMON_MSGS = {
    AUDIO_DATA: "uint8[] data\n",
    AUDIO_DATA_STAMPED: "std_msgs/Header header\naudio_common_msgs/AudioData audio\n",
    AUDIO_INFO: "uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\nstring coding_format\n",
}

MODALITIES = ("image", "depth", "thermal", "audio")
#: spellings of a modality accepted where a person names one (``--topic /x:rgb``)
MODALITY_ALIASES = {"rgb": "image", "color": "image", "colour": "image", "ir": "thermal", "sound": "audio"}

# raw image encodings: (numpy dtype, channels)
_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "8UC1": ("u1", 1),
    "mono16": ("u2", 1),
    "16UC1": ("u2", 1),
    "32FC1": ("f4", 1),
    "yuv422": ("u1", 2),  # UYVY (usb_cam)
    "uyvy": ("u1", 2),
    "yuv422_yuy2": ("u1", 2),  # YUYV (v4l2_camera, usb_cam)
    "yuyv": ("u1", 2),
}
_YUV = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY}
_YUV.update({"yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV, "yuyv": cv2.COLOR_YUV2RGB_YUYV})
_COLOUR = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", *_YUV)
_SIXTEEN = ("mono16", "16UC1")


def normalize_type(name: str) -> str:
    """A message type as rosbag2 writes it: ``sensor_msgs/Image`` and ``sensor_msgs/msg/Image`` give the latter."""
    parts = name.replace(".", "/").strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise InputError(f"not a ROS 2 message type: {name!r} (expected package/msg/Type)")
    return "/".join(parts)


def modality_name(text: str) -> str:
    """A modality as a person names it (``rgb``, ``depth``...) as the pipeline's (``image``, ``depth``...)."""
    m = MODALITY_ALIASES.get(text.strip().lower(), text.strip().lower())
    if m not in MODALITIES:
        raise InputError(f"unknown modality {text!r}: choose {', '.join(MODALITIES)} (or rgb for image)")
    return m


def stamp_ns(header: Any) -> int:
    """A header's stamp as integer nanoseconds (0 when unset)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def guess_modality(msgtype: str, msg: Any) -> str:
    """The modality a message most likely carries: audio types are audio; an Image by its encoding (``16UC1`` and
    ``32FC1`` depth as REP 118 says, ``mono16`` radiometric thermal, 8-bit colour or grey an image); a
    CompressedImage is depth when its format says ``compressedDepth``, else an image. Name it where this is wrong
    (an 8-bit thermal camera, a ``mono16`` depth camera)."""
    msgtype = normalize_type(msgtype)
    if msgtype in (AUDIO_DATA, AUDIO_DATA_STAMPED):
        return "audio"
    if msgtype == COMPRESSED_IMAGE:
        return "depth" if "compresseddepth" in str(msg.format).lower() else "image"
    if msgtype == IMAGE:
        enc = str(msg.encoding)
        if enc in ("16UC1", "32FC1"):
            return "depth"
        if enc == "mono16":
            return "thermal"
        return "image"
    raise InputError(f"lbedge does not classify {msgtype} messages: it reads {', '.join(SENSOR_TYPES)}")


def _bytes_of(data: Any) -> np.ndarray:
    """A message's ``uint8[]`` field (numpy array, ``array.array``, bytes or a list) as a flat uint8 array."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.astype(np.uint8).reshape(-1)
    try:
        return np.frombuffer(memoryview(data).cast("B"), np.uint8)
    except TypeError:
        return np.asarray(data, np.uint8).reshape(-1)


def image_array(msg: Any) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` (``HxW`` or ``HxWxC`` in its own encoding, native byte order), with
    row padding (``step``) removed. A message whose sizes do not add up is an InputError, never reshaped garbage."""
    enc = str(msg.encoding)
    if enc not in _ENCODINGS:
        raise InputError(
            f"image encoding {enc!r} is not supported: publish one of {', '.join(_ENCODINGS)} (e.g. set the "
            "camera driver's pixel format to rgb8)"
        )
    dtype, channels = _ENCODINGS[enc]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1:
        raise InputError(f"empty image ({width}x{height})")
    check_pixels(height, width, f"the {enc} image")
    itemsize = np.dtype(dtype).itemsize
    row = width * channels * itemsize if enc not in _YUV else width * 2
    if step < row:
        raise InputError(f"{enc} image {width}x{height}: step {step} is shorter than a row ({row} bytes)")
    buf = _bytes_of(msg.data)
    if buf.size < step * height:
        raise InputError(f"{enc} image {width}x{height} with step {step} needs {step * height} bytes, got {buf.size}")
    rows = buf[: step * height].reshape(height, step)[:, :row]
    if enc in _YUV:
        return np.ascontiguousarray(rows).reshape(height, width, 2)
    order = ">" if int(msg.is_bigendian) else "<"
    arr = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order) if itemsize > 1 else dtype)
    arr = arr.reshape(height, width, channels) if channels > 1 else arr.reshape(height, width)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False) if itemsize > 1 else arr


def rgb_of(arr: np.ndarray, encoding: str) -> np.ndarray:
    """An 8-bit image of a colour or grey encoding as ``HxWx3`` uint8 RGB."""
    if encoding in _YUV:
        return cv2.cvtColor(arr, _YUV[encoding])
    if encoding in ("mono8", "8UC1"):
        return np.repeat(arr[..., None], 3, axis=2)
    if encoding == "rgb8":
        return arr
    if encoding == "rgba8":
        return np.ascontiguousarray(arr[..., :3])
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(arr[..., 2::-1])
    raise InputError(f"a {encoding} image is not an 8-bit colour or grey picture: is this topic depth or thermal?")


# compressed_depth_image_transport: a 12-byte header (int32 format, float32 depthQuantA, depthQuantB), then a PNG
_DEPTH_HEADER = np.dtype([("format", "<i4"), ("quant_a", "<f4"), ("quant_b", "<f4")])
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def compressed_array(msg: Any) -> tuple[np.ndarray, str]:
    """A ``sensor_msgs/CompressedImage`` decoded to (pixels, the raw encoding they now have): JPEG/PNG colour as
    ``bgr8``/``bgra8``/``mono8``, 16-bit PNG as ``mono16``, and ``compressedDepth`` (``16UC1`` PNG as millimetres,
    ``32FC1`` quantised inverse depth as metres, NaN where no data) as ``16UC1``/``32FC1``."""
    fmt = str(msg.format)
    data = _bytes_of(msg.data).tobytes()
    if "compresseddepth" in fmt.lower():
        return _compressed_depth(data, fmt)
    img = decode_image(data, cv2.IMREAD_UNCHANGED)
    if img.ndim == 2:
        return img, "mono16" if img.dtype == np.uint16 else "mono8"
    if img.dtype != np.uint8:
        raise InputError(f"compressed image ({fmt!r}) decoded to {img.dtype} with {img.shape[2]} channels")
    return img, {3: "bgr8", 4: "bgra8"}.get(img.shape[2], "bgr8")


def _compressed_depth(data: bytes, fmt: str) -> tuple[np.ndarray, str]:
    encoding = fmt.split(";")[0].strip()
    if len(data) < _DEPTH_HEADER.itemsize + len(_PNG_SIGNATURE):
        raise InputError(f"compressedDepth image ({fmt!r}) of {len(data)} bytes is too short")
    header = np.frombuffer(data[: _DEPTH_HEADER.itemsize], _DEPTH_HEADER)[0]
    payload = data[_DEPTH_HEADER.itemsize :]
    if not payload.startswith(_PNG_SIGNATURE):
        raise InputError(
            f"compressedDepth image ({fmt!r}) is not PNG (RVL?): lbedge reads PNG compressedDepth; set the "
            "publisher's compressedDepth format to png, or subscribe to the raw depth topic"
        )
    img = decode_image(payload, cv2.IMREAD_UNCHANGED)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise InputError(f"compressedDepth image ({fmt!r}) is not 16-bit single-channel: {img.dtype} {img.shape}")
    if encoding == "16UC1":
        return img, "16UC1"
    if encoding == "32FC1":
        a, b = float(header["quant_a"]), float(header["quant_b"])
        with np.errstate(divide="ignore", invalid="ignore"):
            metres = np.where(img > 0, a / (img.astype(np.float32) - b), np.nan).astype(np.float32)
        return metres, "32FC1"
    raise InputError(f"compressedDepth image with encoding {encoding!r}: expected 16UC1 or 32FC1")


def depth_mm(arr: np.ndarray, encoding: str) -> np.ndarray:
    """A REP 118 depth image in millimetres: ``16UC1``/``mono16`` as they are (uint16, 0 = no data), ``32FC1``
    metres as float32 millimetres with NaN where there is no data (NaN, and the +-Inf of out-of-range pixels)."""
    if encoding in _SIXTEEN:
        return arr
    if encoding == "32FC1":
        mm = arr.astype(np.float32) * np.float32(1000.0)
        mm[~np.isfinite(mm) | (mm <= 0)] = np.nan
        return mm
    raise InputError(f"a {encoding} image is not depth: REP 118 depth is 16UC1 (millimetres) or 32FC1 (metres)")


@dataclass(frozen=True)
class AudioFormat:
    """The PCM that ``audio_common_msgs/AudioData`` carries (what ``audio_capture`` states in ``AudioInfo`` and its
    parameters): ``sample_rate``, ``channels`` (interleaved), ``sample_format`` (GStreamer names: S16LE, S32LE,
    F32LE, U8...) and ``coding_format`` (only raw PCM, ``wave``, can be classified; run ``audio_capture`` with
    ``format:=wave``)."""

    sample_rate: int = 16000
    channels: int = 1
    sample_format: str = "S16LE"
    coding_format: str = "wave"

    def __post_init__(self) -> None:
        if not (isinstance(self.sample_rate, int) and 1000 <= self.sample_rate <= 384000):
            raise SensorError(f"audio sample_rate must be an integer from 1000 to 384000 Hz, got {self.sample_rate!r}")
        if not (isinstance(self.channels, int) and 1 <= self.channels <= 64):
            raise SensorError(f"audio channels must be an integer from 1 to 64, got {self.channels!r}")
        if self.sample_format.upper() not in _SAMPLE_FORMATS:
            raise SensorError(
                f"audio sample_format {self.sample_format!r} is not supported: {', '.join(_SAMPLE_FORMATS)}"
            )
        if self.coding_format.lower() not in ("wave", "raw", "pcm", ""):
            raise SensorError(
                f"audio coding_format {self.coding_format!r} cannot be classified: lbedge reads raw PCM; run "
                "audio_capture with format:=wave (its default, mp3, is compressed)"
            )

    @classmethod
    def from_info(cls, info: Any) -> "AudioFormat":
        """The format an ``audio_common_msgs/AudioInfo`` message states."""
        return cls(int(info.sample_rate), int(info.channels), str(info.sample_format), str(info.coding_format))

    @classmethod
    def parse(cls, text: str) -> "AudioFormat":
        """``RATE[:CHANNELS[:SAMPLE_FORMAT]]``, e.g. ``16000:1:S16LE``."""
        parts = [p.strip() for p in text.split(":")]
        try:
            rate = int(parts[0])
            channels = int(parts[1]) if len(parts) > 1 and parts[1] else 1
        except ValueError:
            raise SensorError(f"audio format {text!r}: expected RATE[:CHANNELS[:FORMAT]], e.g. 16000:1:S16LE") from None
        if len(parts) > 3:
            raise SensorError(f"audio format {text!r}: expected RATE[:CHANNELS[:FORMAT]], e.g. 16000:1:S16LE")
        return cls(rate, channels, parts[2] if len(parts) > 2 and parts[2] else "S16LE")

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample of every channel."""
        return np.dtype(_SAMPLE_FORMATS[self.sample_format.upper()][0]).itemsize * self.channels

    def to_float(self, data: bytes | np.ndarray) -> np.ndarray:
        """Whole frames of interleaved PCM as float32 ``[channels, samples]`` in [-1, 1]."""
        dtype, offset, scale = _SAMPLE_FORMATS[self.sample_format.upper()]
        raw = np.frombuffer(data, np.dtype(dtype)).astype(np.float32)
        return ((raw - offset) / scale).reshape(-1, self.channels).T


# GStreamer sample format -> (numpy dtype, offset, full scale)
_SAMPLE_FORMATS: dict[str, tuple[str, float, float]] = {
    "U8": ("u1", 128.0, 128.0),
    "S8": ("i1", 0.0, 128.0),
    "S16LE": ("<i2", 0.0, 32768.0),
    "S16BE": (">i2", 0.0, 32768.0),
    "S32LE": ("<i4", 0.0, 2147483648.0),
    "S32BE": (">i4", 0.0, 2147483648.0),
    "F32LE": ("<f4", 0.0, 1.0),
    "F32BE": (">f4", 0.0, 1.0),
    "F64LE": ("<f8", 0.0, 1.0),
}


class AudioWindower:
    """Chunks of PCM, as audio messages bring them, into sliding windows of ``window`` seconds every ``hop``
    seconds. Each window is stamped with the time at its end: the stamp of the chunk holding its last sample plus
    that sample's offset in the chunk. Memory holds one window and one chunk at most."""

    def __init__(self, fmt: AudioFormat, window: float, hop: float):
        check_window(window, hop)
        self.fmt = fmt
        self.size = max(1, int(round(window * fmt.sample_rate)))
        self.step = max(1, int(round(hop * fmt.sample_rate)))
        self.reset()

    def reset(self) -> None:
        """Forget everything (a source reopened from the start)."""
        self._buf = np.zeros((self.fmt.channels, 0), np.float32)
        self._start = 0  # absolute index of the first buffered sample
        self._next_end = self.size  # absolute index just after the next window's last sample
        self._leftover = b""  # a partial frame at the end of the last chunk
        self._chunks: list[tuple[int, int]] = []  # (absolute index of a chunk's first sample, its stamp in ns)
        self.windows = 0

    def push(self, data: Any, stamp: int) -> list[tuple[np.ndarray, int]]:
        """Add a chunk stamped ``stamp`` (ns, the time of its first sample); returns the windows now complete, each
        ``(float32 [channels, samples], stamp of its end in ns)``."""
        raw = self._leftover + _bytes_of(data).tobytes()
        whole = len(raw) - len(raw) % self.fmt.frame_bytes
        self._leftover = raw[whole:]
        if not whole:
            return []
        samples = self.fmt.to_float(raw[:whole])
        self._chunks.append((self._start + self._buf.shape[1], int(stamp)))
        self._buf = np.concatenate([self._buf, samples], axis=1)
        out = []
        while self._start + self._buf.shape[1] >= self._next_end:
            lo = self._next_end - self.size - self._start
            out.append((self._buf[:, lo : lo + self.size].copy(), self._time_at(self._next_end)))
            self._next_end += self.step
            self.windows += 1
        keep_from = self._next_end - self.size  # the first sample a later window needs
        if keep_from > self._start:
            self._buf = self._buf[:, keep_from - self._start :]
            self._start = keep_from
        first_needed = max((i for i, (at, _) in enumerate(self._chunks) if at <= self._start), default=0)
        del self._chunks[:first_needed]
        return out

    def flush(self) -> list[tuple[np.ndarray, int]]:
        """At the end of a recording shorter than one window: that short window (as an audio file gives it);
        nothing when a window was already delivered."""
        if self.windows or not self._buf.shape[1]:
            return []
        self.windows += 1
        end = self._start + self._buf.shape[1]
        return [(self._buf.copy(), self._time_at(end))]

    def _time_at(self, index: int) -> int:
        at, stamp = next(((a, s) for a, s in reversed(self._chunks) if a < index), self._chunks[0])
        return stamp + int(round((index - at) * 1e9 / self.fmt.sample_rate))


@dataclass(frozen=True)
class DecodeOptions:
    """How a topic's messages become frames: the thermal camera profile of 16-bit thermal images (``lepton``:
    centikelvin, ``infiray-p2``: 1/64 K, ``boson``: counts) and its gain control, the audio format (None: what the
    recording's ``AudioInfo`` says, else 16 kHz mono S16LE), the audio window and hop in seconds, and the
    ``frame_id`` of messages without a header (``AudioData``) or with an empty one."""

    thermal_profile: str = "lepton"
    agc: str = "percentile"
    audio: AudioFormat | None = None
    window: float = 2.0
    hop: float = 1.0
    frame_id: str = ""

    def __post_init__(self) -> None:
        if self.thermal_profile not in PROFILES:
            raise SensorError(f"unknown thermal profile {self.thermal_profile!r}: choose {', '.join(PROFILES)}")
        if self.agc not in AGC_METHODS:
            check_agc(self.agc)
        check_window(self.window, self.hop)


@dataclass
class Decoded:
    """One frame's worth of a topic: the data, its time stamp (ns), its units and meta."""

    data: np.ndarray
    stamp_ns: int
    units: str
    meta: dict[str, Any] = field(default_factory=dict)


class MessageDecoder:
    """One topic's messages of ``msgtype`` as frame data of ``modality``: images in RGB, depth in millimetres,
    thermal as the 8-bit AGC image with the temperature map, audio in sliding windows. Every frame's ``meta`` has
    ``stamp_ns``, ``frame_id``, ``topic``, ``log_time_ns`` (the recording's or the receive time) and ``encoding``.
    """

    def __init__(self, msgtype: str, modality: str, options: DecodeOptions | None = None, *, topic: str = ""):
        self.msgtype = normalize_type(msgtype)
        if self.msgtype not in SENSOR_TYPES:
            raise SensorError(f"{topic or 'topic'}: lbedge reads {', '.join(SENSOR_TYPES)}, not {self.msgtype}")
        self.modality = modality_name(modality)
        audio_type = self.msgtype in (AUDIO_DATA, AUDIO_DATA_STAMPED)
        if audio_type != (self.modality == "audio"):
            raise SensorError(f"{topic or 'topic'}: {self.msgtype} messages cannot be {self.modality} frames")
        self.options = options or DecodeOptions()
        self.topic = topic
        self.profile = PROFILES[self.options.thermal_profile]
        self.audio_format = self.options.audio or AudioFormat()
        self._windower = AudioWindower(self.audio_format, self.options.window, self.options.hop) if audio_type else None
        self._frame_id = self.options.frame_id  # of the last audio chunk (a short recording's one window)

    @property
    def units(self) -> str:
        return {"image": "rgb8", "depth": "mm", "thermal": "agc8", "audio": "pcm_float"}[self.modality]

    def reset(self) -> None:
        """Forget buffered audio (the source starts over)."""
        if self._windower is not None:
            self._windower.reset()

    def decode(self, msg: Any, log_time_ns: int) -> list[Decoded]:
        """The frames one message completes: one for an image, none or more for an audio chunk. A message that
        cannot be decoded is an InputError saying why."""
        header = getattr(msg, "header", None)
        stamp = stamp_ns(header) if header is not None else 0
        meta = {
            "stamp_ns": stamp or int(log_time_ns),
            "frame_id": (str(header.frame_id) if header is not None else "") or self.options.frame_id,
            "topic": self.topic,
            "log_time_ns": int(log_time_ns),
        }
        if self._windower is not None:
            chunk = msg.audio.data if self.msgtype == AUDIO_DATA_STAMPED else msg.data
            self._frame_id = meta["frame_id"]
            out = []
            for samples, end in self._windower.push(chunk, meta["stamp_ns"]):
                m = {**meta, "stamp_ns": end, "encoding": self.audio_format.sample_format}
                out.append(Decoded(samples, end, self.units, {**m, "sample_rate": self.audio_format.sample_rate}))
            return out
        if self.msgtype == COMPRESSED_IMAGE:
            arr, encoding = compressed_array(msg)
        else:
            arr, encoding = image_array(msg), str(msg.encoding)
        meta["encoding"] = encoding
        data, extra = self._pixels(arr, encoding)
        return [Decoded(data, meta["stamp_ns"], self.units, {**meta, **extra})]

    def flush(self, log_time_ns: int = 0) -> list[Decoded]:
        """What is left at the end of a recording (an audio recording shorter than one window)."""
        if self._windower is None:
            return []
        meta = {"frame_id": self._frame_id, "topic": self.topic, "log_time_ns": int(log_time_ns)}
        meta.update(encoding=self.audio_format.sample_format, sample_rate=self.audio_format.sample_rate)
        return [Decoded(s, end, self.units, {**meta, "stamp_ns": end}) for s, end in self._windower.flush()]

    def _pixels(self, arr: np.ndarray, encoding: str) -> tuple[np.ndarray, dict[str, Any]]:
        if self.modality == "image":
            return rgb_of(arr, encoding), {}
        if self.modality == "depth":
            return depth_mm(arr, encoding), {}
        if encoding in _SIXTEEN:  # radiometric thermal: the camera profile says what the values mean
            celsius = self.profile.plane_to_celsius(arr)
            picture = agc(celsius if celsius is not None else arr, self.options.agc)
            return picture, {"raw": arr, "celsius": celsius, "profile": self.profile.name}
        if encoding in _COLOUR:  # a thermal camera's own 8-bit picture (already gain-controlled)
            return rgb_of(arr, encoding), {}
        raise InputError(f"a {encoding} image cannot be a thermal frame: publish mono16 (radiometric) or mono8")
