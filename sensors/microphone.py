"""Live microphone capture through PortAudio (``sounddevice``), delivered as sliding windows.

:class:`Microphone` is the live twin of :class:`lbedge.sensors.AudioFileSource`: every ``read()`` returns the
newest ``window`` seconds as float32 ``[channels, samples]`` once ``hop`` seconds of new sound have arrived,
resampled to ``target_rate`` (16 kHz, what LanguageBind's audio tower expects) with lbedge's torchaudio-exact
resampler. The PortAudio callback only copies each block into a preallocated ring buffer of ``window + hop``
seconds, so memory stays bounded however slowly the caller reads (a reader a hop or more behind gets the
newest window and the windows it missed are counted in ``meta["dropped_windows"]``).

Failures become :class:`lbedge.errors.SensorError` so a pipeline closes and reopens the source: a device
that disappears (PortAudio ends the stream), a stream that stops delivering for ``stall_timeout`` seconds,
and a device that cannot be opened. Opening and closing run with a time bound, because a wedged sound
server (a frozen PulseAudio daemon, for instance) blocks them inside PortAudio indefinitely.

Needs ``pip install "lbedge[audio]"`` and the PortAudio library (``apt install libportaudio2`` on
Debian/Ubuntu/JetPack).
"""

from __future__ import annotations

import logging
import threading
import time
from types import ModuleType
from typing import Any, Callable, NamedTuple

import numpy as np

from lbedge.deps import require
from lbedge.errors import MissingDependency, SensorError
from lbedge.preprocess.audio import resample

from .audio import check_window
from .base import BaseSource

log = logging.getLogger(__name__)

_PORTAUDIO_HINT = (
    'apt install libportaudio2 (Debian/Ubuntu/JetPack; brew install portaudio on macOS) and pip install "lbedge[audio]"'
)

# PortAudio streams of this process not yet fully closed (an abandoned close still counts until it returns):
# re-initialising PortAudio to rescan devices is only safe when there are none.
_streams_lock = threading.Lock()
_open_streams = 0


def _track(delta: int) -> None:
    global _open_streams
    with _streams_lock:
        _open_streams += delta


def _sounddevice() -> ModuleType:
    """``import sounddevice``, or :class:`MissingDependency` naming what to install."""
    try:
        return require("sounddevice")
    except OSError as exc:  # the module is installed but the PortAudio shared library is not
        raise MissingDependency(
            f"microphone capture needs the PortAudio library, which was not found: {_PORTAUDIO_HINT} ({exc})"
        ) from exc


def _rescan(sd: ModuleType) -> bool:
    """Re-initialise PortAudio so that devices plugged in (or sound servers started) after import appear.

    Skipped while any stream of this process is open, because terminating PortAudio closes them all."""
    with _streams_lock:
        if _open_streams:
            return False
        try:
            sd._terminate()
            sd._initialize()
        except Exception as exc:  # noqa: BLE001 - a rescan is best effort
            log.debug("PortAudio rescan failed: %s", exc)
            return False
        return True


class InputDevice(NamedTuple):
    """A PortAudio device with input channels."""

    index: int
    name: str
    channels: int
    default_rate: float


def list_input_devices(rescan: bool = False) -> list[InputDevice]:
    """The devices that can record: ``(index, name, channels, default_rate)``.

    ``rescan=True`` re-initialises PortAudio first (when no stream is open) so that a microphone plugged in
    after the program started is listed."""
    sd = _sounddevice()
    if rescan:
        _rescan(sd)
    return [
        InputDevice(int(d["index"]), str(d["name"]), int(d["max_input_channels"]), float(d["default_samplerate"]))
        for d in sd.query_devices()
        if d["max_input_channels"] > 0
    ]


def _describe(devices: list[InputDevice]) -> str:
    if not devices:
        return "no input devices found (no sound card, or PortAudio cannot see it)"
    return "input devices: " + "; ".join(
        f"{d.index}: {d.name!r} ({d.channels} ch, {d.default_rate:g} Hz)" for d in devices
    )


def _run_bounded(
    fn: Callable[[], Any], timeout: float, name: str, on_late: Callable[[Any], None] | None = None
) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon thread for at most ``timeout`` seconds: ``(finished, result)``.

    An exception of ``fn`` is re-raised here. When ``fn`` finishes after the caller gave up, ``on_late`` gets
    its result (to release what it opened)."""
    lock = threading.Lock()
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result, error = None, exc
        with lock:
            if box.get("abandoned"):
                late = True
            else:
                box["result"], box["error"], late = result, error, False
                done.set()
        if late and on_late is not None and error is None:
            on_late(result)

    threading.Thread(target=target, name=name, daemon=True).start()
    done.wait(timeout)
    with lock:
        if not done.is_set():
            box["abandoned"] = True
            return False, None
    if box["error"] is not None:
        raise box["error"]
    return True, box["result"]


class _Capture:
    """State of one open stream: the ring buffer the PortAudio callback fills and the reader's position."""

    def __init__(self, window_n: int, hop_n: int, channels: int, rate: int):
        self.rate, self.window_n, self.hop_n = rate, window_n, hop_n
        self.capacity = window_n + hop_n
        self.ring = np.zeros((self.capacity, channels), np.float32)  # [samples, channels] like PortAudio
        self.cond = threading.Condition(threading.Lock())
        self.written = 0  # samples written since the stream started
        self.last_adc = 0.0  # stream time of sample ``written - 1`` (0: the host API gives none)
        self.last_data = time.monotonic()
        self.wake_at = window_n  # the reader is woken once ``written`` reaches this
        self.overflows = 0
        self.finished = False  # PortAudio ended the stream on its own (device lost, host API error)
        self.delivered_end: int | None = None
        self.stream: Any = None

    # --- PortAudio's audio thread -------------------------------------------------------------------------
    def callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        adc = time_info.inputBufferAdcTime
        with self.cond:
            if status.input_overflow:
                self.overflows += 1
            cap, ring = self.capacity, self.ring
            src, start = indata, self.written
            if frames > cap:  # a block larger than the ring: keep its newest part
                src, start = indata[frames - cap :], self.written + frames - cap
            n = src.shape[0]
            pos = start % cap
            first = min(n, cap - pos)
            ring[pos : pos + first] = src[:first]
            if first < n:
                ring[: n - first] = src[first:]
            self.written += frames
            self.last_adc = adc + (frames - 1) / self.rate if adc > 0 else 0.0
            self.last_data = time.monotonic()
            if self.written >= self.wake_at:
                self.cond.notify_all()

    def on_finished(self) -> None:
        with self.cond:
            self.finished = True
            self.cond.notify_all()

    # --- the reader ---------------------------------------------------------------------------------------
    def copy(self, end: int, window_n: int) -> np.ndarray:
        """Samples ``[end - window_n, end)`` as ``[samples, channels]`` (call with ``cond`` held)."""
        out = np.empty((window_n, self.ring.shape[1]), np.float32)
        pos = (end - window_n) % self.capacity
        first = min(window_n, self.capacity - pos)
        out[:first] = self.ring[pos : pos + first]
        if first < window_n:
            out[first:] = self.ring[: window_n - first]
        return out


class Microphone(BaseSource):
    """A live microphone: sliding windows float32 ``[channels, samples]``, ``meta["sample_rate"]`` their rate.

    ``device``: None (the default input), a PortAudio device index, or part of a device name (matched
    case-insensitively among input devices; see :func:`list_input_devices`). ``window``/``hop`` in seconds:
    the first ``read()`` waits for a full window, each later one for ``hop`` seconds of new samples.
    ``sample_rate``: the capture rate (None: the device's default). ``target_rate``: the rate of the delivered
    windows (None: the capture rate). ``blocksize``/``latency``: passed to ``sounddevice.InputStream``.
    ``stall_timeout``: seconds without any sample before ``read()`` raises :class:`SensorError` (default
    ``max(2 * hop, 2)``). ``open_timeout``/``close_timeout`` bound opening and closing the stream.

    ``frame.device_timestamp`` is the PortAudio stream time (``inputBufferAdcTime``) of the window's last
    sample when the host API provides it; ``meta`` has ``sample_rate``, ``device``, ``device_index``,
    ``device_rate``, ``overflows`` (input overflows reported by PortAudio) and ``dropped_windows`` (windows a
    reader keeping up would have had but a slower one did not get), both counted since the source was created.
    """

    modality = "audio"
    units = "pcm_float"
    live = True

    def __init__(
        self,
        device: int | str | None = None,
        *,
        window: float = 2.0,
        hop: float = 1.0,
        sample_rate: int | None = None,
        channels: int = 1,
        target_rate: int | None = 16000,
        blocksize: int | None = None,
        latency: float | str | None = None,
        stall_timeout: float | None = None,
        open_timeout: float = 5.0,
        close_timeout: float = 2.0,
        name: str = "",
    ):
        check_window(window, hop)
        if int(channels) != channels or channels < 1:
            raise SensorError(f"channels must be a positive integer, got {channels!r}")
        for label, rate in (("sample_rate", sample_rate), ("target_rate", target_rate)):
            if rate is not None and not rate > 0:
                raise SensorError(f"{label} must be a positive rate in Hz or None, got {rate!r}")
        if target_rate is not None and round(window * target_rate) < 1:
            raise SensorError(f"window {window} s holds no sample at {target_rate} Hz")
        if stall_timeout is not None and not stall_timeout > 0:
            raise SensorError(f"stall_timeout must be positive seconds, got {stall_timeout!r}")
        self._sd = _sounddevice()
        super().__init__(name or f"microphone:{'default' if device is None else device}", fps=1.0 / hop)
        self.device, self.window, self.hop = device, float(window), float(hop)
        self.sample_rate, self.channels, self.target_rate = sample_rate, int(channels), target_rate
        self.blocksize, self.latency = blocksize, latency
        self.stall_timeout = float(stall_timeout) if stall_timeout is not None else max(2.0 * hop, 2.0)
        self.open_timeout, self.close_timeout = open_timeout, close_timeout
        self.device_index: int | None = None
        self.device_name = ""
        self.rate = 0  # the capture rate of the open stream
        self._cap: _Capture | None = None
        self._overflows_before = 0
        self._dropped = 0

    # --- device selection ---------------------------------------------------------------------------------
    def _find_device(self) -> InputDevice | None:
        sd, spec = self._sd, self.device
        devices = list_input_devices()
        if spec is None:
            try:
                index = int(sd.query_devices(kind="input")["index"])
            except Exception:  # noqa: BLE001 - PortAudio says "no default input device" in several ways
                return None
            return next((d for d in devices if d.index == index), None)
        if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
            return next((d for d in devices if d.index == int(spec)), None)
        needle = str(spec).lower()
        exact = [d for d in devices if d.name.lower() == needle]
        if exact:
            return exact[0]
        found = [d for d in devices if needle in d.name.lower()]
        if len(found) > 1:
            raise SensorError(
                f"{self.name}: {spec!r} matches several input devices, pass an index or a longer "
                f"part of the name: {_describe(found)}"
            )
        return found[0] if found else None

    def _resolve(self) -> InputDevice:
        found = self._find_device()
        if found is None and _rescan(self._sd):  # plugged in (or sound server started) after import?
            found = self._find_device()
        if found is None:
            what = "no default input device" if self.device is None else f"no input device matches {self.device!r}"
            raise SensorError(f"{self.name}: {what}; {_describe(list_input_devices())}")
        return found

    # --- BaseSource hooks ---------------------------------------------------------------------------------
    def _open(self) -> None:
        dev = self._resolve()
        if self.channels > dev.channels:
            raise SensorError(
                f"{self.name}: {dev.name!r} has {dev.channels} input channel(s), {self.channels} requested"
            )
        rate = int(round(self.sample_rate or dev.default_rate))
        window_n, hop_n = max(1, round(self.window * rate)), max(1, round(self.hop * rate))
        cap = _Capture(window_n, hop_n, self.channels, rate)
        sd = self._sd

        def start() -> Any:
            stream = sd.InputStream(
                device=dev.index,
                samplerate=rate,
                channels=self.channels,
                dtype="float32",
                blocksize=self.blocksize or 0,
                latency=self.latency,
                callback=cap.callback,
                finished_callback=cap.on_finished,
            )
            _track(+1)
            try:
                stream.start()
            except BaseException:
                _close_stream(stream)
                raise
            return stream

        try:
            ok, stream = _run_bounded(start, self.open_timeout, f"{self.name}-open", on_late=_close_stream)
        except (sd.PortAudioError, ValueError) as exc:
            gone = ""
            if _rescan(sd) and self._find_device() is None:  # unplugged, or its sound server went away
                gone = f"; it is no longer listed, {_describe(list_input_devices())}"
            raise SensorError(
                f"{self.name}: cannot record from {dev.name!r} (device {dev.index}) at {rate} Hz, "
                f"{self.channels} channel(s): {exc}{gone}"
            ) from exc
        if not ok:
            raise SensorError(
                f"{self.name}: opening {dev.name!r} did not finish within {self.open_timeout:g} s "
                "(sound server or driver not responding)"
            )
        cap.stream, cap.last_data = stream, time.monotonic()
        self._cap, self.rate = cap, rate
        self.device_index, self.device_name = dev.index, dev.name

    def _read(self) -> tuple[np.ndarray, float | None]:
        cap = self._cap
        assert cap is not None
        window_n, hop_n = cap.window_n, cap.hop_n
        with cap.cond:
            target = window_n if cap.delivered_end is None else cap.delivered_end + hop_n
            cap.wake_at = target
            while cap.written < target:
                if cap.finished:
                    raise SensorError(
                        f"{self.name}: the audio stream of {self.device_name!r} stopped "
                        "(device unplugged or sound server gone)"
                    )
                idle = time.monotonic() - cap.last_data
                if idle >= self.stall_timeout:
                    raise SensorError(
                        f"{self.name}: no audio from {self.device_name!r} for {idle:.1f} s "
                        "(device stalled or disconnected)"
                    )
                cap.cond.wait(min(self.stall_timeout - idle, 0.25))
            end = target if cap.written - target < hop_n else cap.written  # a late reader gets the newest
            if end != target:
                self._dropped += (end - target) // hop_n
            cap.delivered_end = end
            raw = cap.copy(end, window_n)
            ts = cap.last_adc - (cap.written - end) / cap.rate if cap.last_adc > 0 else None
        data = np.ascontiguousarray(raw.T)
        if self.target_rate is not None and int(self.target_rate) != cap.rate:
            out_n = max(1, round(self.window * self.target_rate))
            data = resample(data, cap.rate, int(self.target_rate))
            if data.shape[1] != out_n:  # the resampler rounds up: keep shapes constant
                data = (
                    np.ascontiguousarray(data[:, :out_n])
                    if data.shape[1] > out_n
                    else np.pad(data, ((0, 0), (0, out_n - data.shape[1])))
                )
        return data, ts

    def _close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is None:
            return
        self._overflows_before += cap.overflows
        ok, _ = _run_bounded(lambda: _close_stream(cap.stream), self.close_timeout, f"{self.name}-close")
        if not ok:
            log.warning(
                "%s: closing %r did not finish within %g s; left to finish in the background",
                self.name,
                self.device_name,
                self.close_timeout,
            )

    def _meta(self) -> dict[str, Any]:
        cap = self._cap
        return {
            "sample_rate": int(self.target_rate) if self.target_rate is not None else self.rate,
            "device": self.device_name,
            "device_index": self.device_index,
            "device_rate": self.rate,
            "overflows": self._overflows_before + (cap.overflows if cap is not None else 0),
            "dropped_windows": self._dropped,
        }


def _close_stream(stream: Any) -> None:
    """Abort and close a PortAudio stream, ignoring errors (the device may be gone)."""
    try:
        stream.abort(ignore_errors=True)
        stream.close(ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 - closing a dead stream must not fail
        log.debug("closing audio stream: %s", exc)
    finally:
        _track(-1)
