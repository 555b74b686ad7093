"""``lbedge demo --web``: the live view in a browser, for robots whose screen is a laptop's browser.

A :class:`WebView` serves, from its own thread with its own asyncio event loop (aiohttp, the ``web`` extra):

- ``GET /``: one self-contained page (``web.html``, package data, no CDN): the live mosaic, the latest labels per
  source and fused, the event log, and a form that changes the labels while the pipeline runs;
- ``GET /stream.mjpg``: the mosaic as MJPEG (``multipart/x-mixed-replace`` JPEG parts); ``GET /frame.jpg``: the
  latest mosaic once;
- ``GET /events``: Server-Sent Events, one JSON object per message with a ``kind``: ``hello`` (the state, first),
  ``result`` (:meth:`lbedge.pipeline.Result.to_dict` with ``n`` and ``frames`` counters), ``labels`` (a new
  ``labels_version`` and its labels), ``event`` (pipeline events: failures, reopenings, stalls, ends, label
  switches), ``end`` (the results ended), and any kind another feature sends with :meth:`WebView.send` (the page
  lists unknown kinds in its event log);
- ``POST /labels``: ``{"labels": ["a", "b"]}`` (or ``"a, b"``) switches the labels through
  :meth:`lbedge.pipeline.Pipeline.set_labels`: 200 with the new ``labels_version``, 400 with the message for bad
  labels, 422 when they could not be switched to;
- ``GET /state``: the state as JSON.

The pipeline's side never waits for a browser: results and frames go into bounded buffers, each client keeps only
the newest frame and a bounded backlog of messages (the oldest are dropped for a slow client), and a client that
stops reading blocks only its own connection. Nothing is authenticated: the view binds to 127.0.0.1 unless told
otherwise, and warns when it listens on another address (docs/web-view.md).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import importlib.resources
import ipaddress
import json
import logging
import socket
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .deps import require
from .errors import LBEdgeError, MissingDependency, UsageError

if TYPE_CHECKING:
    from .pipeline import Pipeline, Result

__all__ = ["DEFAULT_HOST", "WebView", "is_loopback", "parse_address"]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
#: the MJPEG multipart boundary
BOUNDARY = "lbedgeframe"
#: the largest request body (a label list) accepted
MAX_REQUEST_BYTES = 64 * 1024
#: seconds between SSE keep-alive comments (they also find browsers that went away)
KEEPALIVE_S = 15.0


def parse_address(spec: str, default_host: str = DEFAULT_HOST) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[IPv6]:PORT"``, ``":PORT"`` or ``"PORT"`` -> (host, port); port 0 picks a free port.

    Raises :class:`~lbedge.errors.UsageError` naming the accepted forms."""
    text = spec.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"web address {spec!r}: write an IPv6 host in brackets, e.g. [::1]:8080")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise UsageError(f"web address {spec!r}: expected HOST:PORT with a port 0-65535, e.g. 127.0.0.1:8080")
    if any(c.isspace() for c in host):
        raise UsageError(f"web address {spec!r}: the host contains spaces")
    return host or default_host, port


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or an address) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def _jpeg_encoder(quality: int) -> Callable[[np.ndarray], bytes]:
    """A BGR uint8 image -> JPEG bytes, with OpenCV, else Pillow."""
    try:
        from .opencv import cv2
    except ImportError:  # MissingDependency: no OpenCV here
        cv2 = None
    if cv2 is not None:

        def encode_cv2(img: np.ndarray) -> bytes:
            ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
            if not ok:
                raise LBEdgeError(f"OpenCV could not encode a {img.shape} image as JPEG")
            return buf.tobytes()

        return encode_cv2
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependency(
            'the web view encodes JPEG with OpenCV or Pillow; neither is installed: pip install "lbedge[opencv]"'
        ) from exc
    import io

    def encode_pil(img: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img[..., ::-1])).save(out, "JPEG", quality=quality)
        return out.getvalue()

    return encode_pil


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _split_labels(value: object) -> list[str] | None:
    """A label list from a JSON list of strings or one comma/newline separated string; None when it is neither."""
    if isinstance(value, str):
        return [p.strip() for p in value.replace("\n", ",").split(",") if p.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)  # checked as given (an empty or repeated label is refused with its reason)
    return None


class _Client:
    """One browser connection: a bounded backlog of SSE messages, or (MJPEG) the number of the last frame sent."""

    def __init__(self, backlog: int) -> None:
        self.queue: collections.deque[bytes] = collections.deque(maxlen=backlog)
        self.wake = asyncio.Event()
        self.dropped = 0
        self.last_frame = 0

    def put(self, message: bytes) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1  # a slow browser loses its oldest messages, never the pipeline's time
        self.queue.append(message)
        self.wake.set()


class WebView:
    """The live view over HTTP: MJPEG mosaic, Server-Sent Events, a page that changes labels (module docs).

    ``start()`` binds ``host:port`` (a clear :class:`~lbedge.errors.LBEdgeError` when the port is in use) and serves
    from a thread of its own; :meth:`attach` gives it the pipeline whose labels the page changes; the producer
    calls :meth:`publish_result`, :meth:`publish_frame` (when :meth:`wants_frame`), :meth:`send_event`,
    :meth:`end`; :meth:`stop` (or leaving the ``with`` block) ends every connection and the thread. None of these
    waits for a browser.

    ``max_fps``: mosaic frames per second at most while someone watches the stream (``idle_fps`` otherwise, so
    ``/frame.jpg`` and a new viewer's first frame stay fresh). ``backlog``: messages kept per SSE client.
    ``label_timeout``: seconds ``POST /labels`` waits for the switch before answering 504 (it still switches).
    ``say``: where the address and warnings are told (besides the log).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 8080,
        *,
        max_fps: float = 10.0,
        idle_fps: float = 1.0,
        jpeg_quality: int = 80,
        backlog: int = 256,
        label_timeout: float = 120.0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if not 0 <= int(port) <= 65535:
            raise UsageError(f"web port must be 0-65535, got {port}")
        if not (max_fps > 0 and idle_fps > 0):
            raise UsageError("max_fps and idle_fps must be positive")
        if not 1 <= jpeg_quality <= 100 or backlog < 1 or not label_timeout > 0:
            raise UsageError("jpeg_quality must be 1-100, backlog at least 1 and label_timeout positive")
        self.host, self.port = host, int(port)
        self.max_fps, self.idle_fps, self.backlog, self.label_timeout = max_fps, idle_fps, backlog, label_timeout
        self._say = say
        self._web: Any = None  # aiohttp.web, imported by start()
        self._encode = _jpeg_encoder(int(jpeg_quality))
        self._pipeline: Pipeline | None = None
        self._sources: dict[str, str] = {}
        self._labels: list[str] = []
        self._labels_version = -1
        self._lock = threading.Lock()
        self._outbox: collections.deque[bytes] = collections.deque(maxlen=1000)  # producer -> loop, bounded
        self._wake_pending = False
        self._latest: tuple[bytes, int] | None = None  # newest JPEG and its frame number
        self._last_frame_t = float("-inf")
        self._recent_events: collections.deque[str] = collections.deque(maxlen=50)
        self._ended: str | None = None
        self._sse: set[_Client] = set()
        self._mjpeg: set[_Client] = set()
        self._tasks: set[asyncio.Task] = set()
        self._viewers = 0  # MJPEG clients connected (read by the producer)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        #: frames and results published so far
        self.frames = 0
        self.results = 0
        #: what ended the server thread, when it failed (it is logged, never raised into the pipeline)
        self.error: BaseException | None = None

    # --- lifecycle (any thread) ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The page's address (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "WebView":
        """Bind the address and serve from a thread of its own; returns once it accepts connections."""
        if self._thread is not None:
            return self
        aiohttp_web = require("aiohttp.web")
        self._web = aiohttp_web
        self._sock = self._bind()
        self.port = self._sock.getsockname()[1]
        if not is_loopback(self.host):
            self._tell(
                f"warning: the web view listens on {self.host}:{self.port}, reachable from other machines; it has "
                "no authentication: anyone who reaches it sees the sensors and can change the labels "
                "(use 127.0.0.1 and an ssh tunnel, docs/web-view.md)",
                logging.WARNING,
            )
        self._thread = threading.Thread(target=self._run, name="lbedge-web", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise LBEdgeError(f"the web view could not start on {self.host}:{self.port}: {self.error}")
        self._tell(f"web view: {self.url} (Ctrl-C stops)")
        return self

    def _bind(self) -> socket.socket:
        where = f"{self.host}:{self.port}"
        try:
            infos = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
            )
        except socket.gaierror as exc:
            raise LBEdgeError(f"cannot serve the web view on {where}: unknown host ({exc.strerror})") from None
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may rebind at once
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            why = {
                errno.EADDRINUSE: "the port is in use (another lbedge demo or server?): stop it or choose another "
                "port with --web HOST:PORT",
                errno.EACCES: "permission denied (ports below 1024 need root): choose a port above 1023",
                errno.EADDRNOTAVAIL: "the address is not one of this machine's: use 127.0.0.1, or 0.0.0.0 for all",
            }.get(exc.errno, exc.strerror or str(exc))
            raise LBEdgeError(f"cannot serve the web view on {where}: {why}") from None
        return sock

    def attach(self, pipeline: "Pipeline") -> None:
        """Serve ``pipeline``: its sources, and its labels, which ``POST /labels`` changes."""
        self._pipeline = pipeline
        version, labels = pipeline.label_set()
        with self._lock:
            self._sources = {name: src.modality for name, src in pipeline.sources.items()}
            self._ended = None
        self._labels_switched(version, labels)
        self._push(_sse({"kind": "hello", **self.state()}))

    @property
    def serving(self) -> bool:
        """True while the server thread runs (started, not stopped, not failed)."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, seconds: float | None = None) -> None:
        """Keep serving for ``seconds`` (None: until Ctrl-C/SIGTERM or until the server fails)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while self._thread is not None and self._thread.is_alive():
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                return
            self._thread.join(left)

    def stop(self, timeout: float = 5.0) -> None:
        """End every connection and the server thread (idempotent; from any thread)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass  # the loop is already closed
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the web view's thread is still running %.0f s after stop()", timeout)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> "WebView":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- the producer's side (the demo loop): never waits for a browser -------------------------------------
    def wants_frame(self) -> bool:
        """True when a new mosaic should be published now (``max_fps`` while someone watches, else ``idle_fps``)."""
        rate = self.max_fps if self._viewers else self.idle_fps
        return time.monotonic() - self._last_frame_t >= 1.0 / rate

    def publish_frame(self, image_bgr: np.ndarray) -> None:
        """Encode the mosaic (BGR uint8) as JPEG and hand it to every stream viewer (each gets the newest)."""
        jpeg = self._encode(image_bgr)
        with self._lock:
            self.frames += 1
            self._latest = (jpeg, self.frames)
            self._last_frame_t = time.monotonic()
        self._push(None)

    def publish_result(self, result: "Result") -> None:
        """Send a result to every SSE client (and the new labels first, when its ``labels_version`` is new)."""
        if result.labels_version > self._labels_version and self._pipeline is not None:
            version, labels = self._pipeline.label_set()
            self._labels_switched(version, labels)
        with self._lock:
            self.results += 1
            n, frames = self.results, self.frames
        self._push(_sse({"kind": "result", "n": n, "frames": frames, **result.to_dict()}))

    def send_event(self, text: str) -> None:
        """A pipeline event (a failure, a reopening, a stall, an end, a label switch) for the page's event log."""
        with self._lock:
            self._recent_events.append(text)
        self._push(_sse({"kind": "event", "text": text, "time": round(time.time(), 3)}))

    def send(self, kind: str, data: dict[str, Any]) -> None:
        """Any other message, e.g. ``send("watch", {...})``: every SSE client gets ``{"kind": kind, **data}``
        (the page lists kinds it does not know in its event log). ``data`` must be JSON-serialisable."""
        if not kind or kind in ("hello", "result", "labels", "event", "end"):
            raise UsageError(f"send(): {kind!r} is not a free message kind")
        self._push(_sse({**data, "kind": kind}))

    def end(self, message: str) -> None:
        """The results ended (the view stays up until :meth:`stop`): tell every page."""
        with self._lock:
            self._ended = message
        self._push(_sse({"kind": "end", "text": message}))

    def state(self) -> dict[str, Any]:
        """What ``GET /state`` and the ``hello`` message tell: labels, sources, counters, clients."""
        with self._lock:
            return {
                "labels": list(self._labels),
                "labels_version": max(0, self._labels_version),
                "sources": dict(self._sources),
                "running": self._pipeline is not None and self._ended is None,
                "ended": self._ended,
                "results": self.results,
                "frames": self.frames,
                "viewers": self._viewers,
                "viewer_frames": self._viewer_frames(),
                "subscribers": len(self._sse),
                "events": list(self._recent_events),
            }

    def _viewer_frames(self) -> list[int]:
        """The number of the last frame each stream viewer was sent (a stalled browser's stays behind)."""
        for _ in range(3):
            try:
                return [c.last_frame for c in tuple(self._mjpeg)]
            except RuntimeError:  # the loop changed the set meanwhile
                continue
        return []

    def _labels_switched(self, version: int, labels: Sequence[str]) -> None:
        with self._lock:
            if version <= self._labels_version:
                return
            self._labels_version, self._labels = version, list(labels)
        self._push(_sse({"kind": "labels", "labels_version": version, "labels": list(labels)}))

    def _push(self, message: bytes | None) -> None:
        """Queue a message (None: only a new frame) and wake the loop once; bounded, never blocks."""
        with self._lock:
            if message is not None:
                self._outbox.append(message)
            loop = self._loop
            if self._wake_pending or loop is None:
                return
            self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed (stopped, or failed: logged already)
            pass

    def _tell(self, text: str, level: int = logging.INFO) -> None:
        """To ``say`` when given (the log gets it at DEBUG then: said once), else to the log at ``level``."""
        if self._say is None:
            log.log(level, "%s", text)
            return
        log.debug("%s", text)
        try:
            self._say(text)
        except Exception:  # noqa: BLE001 - a closed terminal must not end the server thread
            log.log(level, "%s", text)

    # --- the server thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve(loop))
        except BaseException as exc:  # noqa: BLE001 - reported, never silent; the pipeline goes on without a view
            self.error = exc
            self._tell(f"error: the web view stopped: {type(exc).__name__}: {exc}", logging.ERROR)
            log.debug("web view failed", exc_info=True)
        finally:
            with self._lock:
                self._loop = None
            self._ready.set()
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        web = self._web
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/", self._page)
        app.router.add_get("/stream.mjpg", self._stream)
        app.router.add_get("/frame.jpg", self._frame)
        app.router.add_get("/events", self._events)
        app.router.add_get("/state", self._state)
        app.router.add_post("/labels", self._post_labels)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.SockSite(runner, self._sock).start()
            self._stopping = asyncio.Event()
            with self._lock:
                self._loop = loop
                pending = bool(self._outbox) or self._latest is not None
            if pending:
                loop.call_soon(self._drain)
            self._ready.set()
            await self._stopping.wait()
        finally:
            for client in (*self._sse, *self._mjpeg):
                client.wake.set()
            for task in list(self._tasks):  # streams blocked on a browser that stopped reading
                task.cancel()
            await runner.cleanup()

    def _drain(self) -> None:
        """In the loop: move the producer's messages to every client's backlog, wake the stream viewers."""
        with self._lock:
            messages = list(self._outbox)
            self._outbox.clear()
            self._wake_pending = False
            newest = self._latest[1] if self._latest is not None else 0
        for client in self._sse:
            for m in messages:
                client.put(m)
        for client in self._mjpeg:
            if client.last_frame < newest:
                client.wake.set()

    def _track(self) -> Callable[[], None]:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return lambda: self._tasks.discard(task)

    async def _page(self, request: Any) -> Any:
        html = importlib.resources.files("lbedge").joinpath("web.html").read_text(encoding="utf-8")
        return self._web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def _state(self, request: Any) -> Any:
        return self._web.json_response(self.state())

    async def _frame(self, request: Any) -> Any:
        latest = self._latest
        if latest is None:
            return self._web.json_response({"error": "no frame yet"}, status=503)
        return self._web.Response(body=latest[0], content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _stream(self, request: Any) -> Any:
        resp = self._web.StreamResponse(
            headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                "Cache-Control": "no-cache, no-store",
                "Pragma": "no-cache",
            }
        )
        await resp.prepare(request)
        client, untrack = _Client(1), self._track()
        self._mjpeg.add(client)
        self._viewers = len(self._mjpeg)
        client.wake.set()
        try:
            while self._stopping is not None and not self._stopping.is_set():
                await client.wake.wait()
                client.wake.clear()
                latest = self._latest
                if latest is None or latest[1] <= client.last_frame:
                    continue
                jpeg, client.last_frame = latest
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                await resp.write(head + jpeg + b"\r\n")  # waits for this browser only; newer frames replace
        except (ConnectionError, OSError):
            pass  # the browser went away
        finally:
            self._mjpeg.discard(client)
            self._viewers = len(self._mjpeg)
            untrack()
        return resp

    async def _events(self, request: Any) -> Any:
        resp = self._web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await resp.prepare(request)
        client, untrack = _Client(self.backlog), self._track()
        client.put(b"retry: 2000\n" + _sse({"kind": "hello", **self.state()}))
        self._sse.add(client)
        try:
            while self._stopping is not None and not self._stopping.is_set():
                try:
                    await asyncio.wait_for(client.wake.wait(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                client.wake.clear()
                chunk = b"".join(client.queue)
                client.queue.clear()
                if chunk:
                    await resp.write(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            self._sse.discard(client)
            untrack()
        return resp

    async def _post_labels(self, request: Any) -> Any:
        web = self._web

        def refuse(status: int, text: str) -> Any:
            return web.json_response({"error": text}, status=status)

        if request.content_type != "application/json":
            return refuse(415, 'send JSON: {"labels": ["a person", "a dog"]} with Content-Type: application/json')
        try:
            body = await request.json()
        except ValueError:
            return refuse(400, 'the body is not JSON: send {"labels": ["a person", "a dog"]}')
        except web.HTTPRequestEntityTooLarge:
            return refuse(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes")
        labels = _split_labels(body.get("labels")) if isinstance(body, dict) else None
        if labels is None:
            return refuse(400, '"labels" must be a list of strings or one comma-separated string')
        pipeline = self._pipeline
        if pipeline is None:
            return refuse(503, "no pipeline is running yet: try again in a moment")
        try:
            future: Future = pipeline.set_labels(labels)
        except LBEdgeError as exc:
            return refuse(400, str(exc))
        try:
            version = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.label_timeout)
        except asyncio.TimeoutError:
            return refuse(
                504,
                f"the labels are still being embedded after {self.label_timeout:g} s; they switch "
                "when ready (watch labels_version)",
            )
        except LBEdgeError as exc:
            return refuse(422, str(exc))
        except Exception as exc:  # noqa: BLE001 - one line for the page, the details in the log
            log.error("switching labels failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return refuse(500, f"switching labels failed: {type(exc).__name__}: {exc}")
        self._labels_switched(int(version), labels)
        return web.json_response({"labels_version": int(version), "labels": labels})
