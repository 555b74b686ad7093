"""The live web view (`lbedge demo --web`, lbedge/web.py): plain HTTP (MJPEG parts, Server-Sent Events, label
changes, a used port, a browser that stops reading) and a real headless Chromium on lb-mini's recordings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import LBMINI, ROOT, sigint_as_in_a_terminal
from lbedge.cli import main
from lbedge.demo import run_demo
from lbedge.errors import LBEdgeError, MissingDependency, UsageError
from lbedge.frames import Frame
from lbedge.pipeline import Pipeline
from lbedge.web import WebView, parse_address
from test_pipeline import LABELS, fake_encoder

pytest.importorskip("aiohttp", reason="aiohttp is not installed (the web extra)")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


class ColourSource:
    """Frames of one colour (or noise: large JPEGs), as a recording (no drops, ``n`` frames) or live (endless)."""

    modality = "image"

    def __init__(self, n: int | None = None, *, live: bool = False, noise: bool = False, period: float = 0.0):
        self.name, self.n, self.live, self.noise, self.period, self.i = "cam", n, live, noise, period, 0
        self.rng = np.random.default_rng(0)

    def open(self):
        pass

    def read(self, timeout=None):
        if self.n is not None and self.i >= self.n:
            return None
        if self.period:
            time.sleep(self.period)
        self.i += 1
        if self.noise:
            data = self.rng.integers(0, 256, (240, 320, 3), np.uint8)
        else:
            data = np.zeros((48, 64, 3), np.uint8)
            data[..., 0] = 255  # red (RGB)
        return Frame(data, "image", time.monotonic(), self.i - 1)

    def close(self):
        pass


class Demo:
    """run_demo with a web view in a thread; ``stop()`` ends both and checks that every thread ended."""

    def __init__(self, source, *, linger: float | None = 0.0, **web_kw):
        self.pipe = Pipeline({"cam": source}, fake_encoder(), LABELS)
        self.said: list[str] = []
        self.web = WebView("127.0.0.1", 0, say=self.said.append, **web_kw).start()
        self.stats: dict = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(linger,), daemon=True)
        self.thread.start()

    def _run(self, linger):
        try:
            self.stats = run_demo(self.pipe, output=None, jsonl=None, say=self.said.append, web=self.web,
                                  web_linger=linger)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc

    def url(self, path: str) -> str:
        return self.web.url + path.lstrip("/")

    def stop(self):
        self.pipe.stop()
        self.web.stop()  # ends a lingering view too
        self.thread.join(30)
        assert not self.thread.is_alive(), "run_demo did not end"
        assert not self.web._thread.is_alive(), "the web view's thread did not end"
        if self.error is not None:
            raise self.error


def read_sse(resp, want: int = 1, kind: str = "result") -> list[dict]:
    """Messages from an SSE response until ``want`` messages of ``kind`` came (all of them returned, in order)."""
    got, n = [], 0
    for raw in resp:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            msg = json.loads(line[6:])
            got.append(msg)
            n += msg["kind"] == kind
            if n >= want:
                return got
    raise AssertionError(f"the stream ended after {got}")


def post_labels(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_parse_address():
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_address(":9000") == ("127.0.0.1", 9000) and parse_address("9000") == ("127.0.0.1", 9000)
    assert parse_address("[::1]:8080") == ("::1", 8080) and parse_address("localhost:0") == ("localhost", 0)
    for bad in ("host", "1.2.3.4:99999", "::1:80", "a b:80", ""):
        with pytest.raises(UsageError, match="web address"):
            parse_address(bad)


@pytest.mark.timeout(120)
def test_mjpeg_sse_and_label_changes_over_http():
    demo = Demo(ColourSource(live=True, period=0.01), max_fps=50)
    try:
        # the mosaic as MJPEG: multipart parts, each a JPEG
        with urllib.request.urlopen(demo.url("stream.mjpg"), timeout=30) as resp:
            assert resp.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=lbedgeframe"
            for _ in range(2):
                assert resp.readline() == b"--lbedgeframe\r\n"
                head = {}
                while (line := resp.readline()) != b"\r\n":
                    k, v = line.decode().split(":", 1)
                    head[k.strip().lower()] = v.strip()
                assert head["content-type"] == "image/jpeg"
                jpeg = resp.read(int(head["content-length"]))
                assert jpeg[:2] == b"\xff\xd8" and resp.read(2) == b"\r\n"
                img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                assert img is not None and img.shape[1] >= 320  # the mosaic, one tile at least
        # results as Server-Sent Events: the state first, then results
        with urllib.request.urlopen(demo.url("events"), timeout=30) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            msgs = read_sse(resp, want=3)
        assert msgs[0]["kind"] == "hello" and msgs[0]["labels"] == LABELS and msgs[0]["sources"] == {"cam": "image"}
        results = [m for m in msgs if m["kind"] == "result"]
        assert results[0]["update"]["source"] == "cam" and results[0]["update"]["label"] == "red"
        assert results[0]["labels_version"] == 0 and results[-1]["n"] > results[0]["n"]
        # bad labels: 400 with the message; not JSON: 415; nothing changed
        code, body = post_labels(demo.url("labels"), json.dumps({"labels": ["red", "red"]}).encode())
        assert code == 400 and "red" in body["error"]
        code, body = post_labels(demo.url("labels"), json.dumps({"labels": []}).encode())
        assert code == 400 and "non-empty" in body["error"]
        code, body = post_labels(demo.url("labels"), json.dumps({"labels": 3}).encode())
        assert code == 400 and "list of strings" in body["error"]
        code, body = post_labels(demo.url("labels"), b"labels=red", "application/x-www-form-urlencoded")
        assert code == 415 and "JSON" in body["error"]
        # good labels: the new version, then results classified with it
        with urllib.request.urlopen(demo.url("events"), timeout=30) as resp:
            code, body = post_labels(demo.url("labels"), json.dumps({"labels": "green, red"}).encode())
            assert code == 200 and body == {"labels_version": 1, "labels": ["green", "red"]}
            msg = read_sse(resp, want=1, kind="result")[-1]
            while msg["labels_version"] == 0:  # results classified before the switch, still in the backlog
                msg = read_sse(resp, want=1, kind="result")[-1]
            assert msg["labels_version"] == 1 and set(msg["update"]["scores"]) <= {"green", "red"}
        state = json.loads(urllib.request.urlopen(demo.url("state"), timeout=30).read())
        assert state["labels"] == ["green", "red"] and state["labels_version"] == 1 and state["running"]
        assert urllib.request.urlopen(demo.url("frame.jpg"), timeout=30).read()[:2] == b"\xff\xd8"
        page = urllib.request.urlopen(demo.url(""), timeout=30).read().decode()
        assert "stream.mjpg" in page and "EventSource" in page and "://" not in page  # no CDN
    finally:
        demo.stop()
    assert demo.stats["results"] > 0 and "labels switched to version 1" in " ".join(demo.said)


@pytest.mark.timeout(180)
def test_a_browser_that_stops_reading_does_not_stall_the_pipeline():
    """Two clients connect and never read; the demo still gets every result of a recording, publishing a large
    mosaic after every one, and stops cleanly with the stalled connections open."""
    n = 150
    demo = Demo(ColourSource(n, noise=True), linger=None, max_fps=1e6)
    stalled = []
    for path in ("/stream.mjpg", "/events"):
        s = socket.create_connection(("127.0.0.1", demo.web.port), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stalled.append(s)
    try:
        while not demo.web.state()["ended"] and demo.thread.is_alive():
            time.sleep(0.1)
        assert demo.web.results == n  # every result reached the view; nobody waited for the stalled browsers
        state = demo.web.state()
        assert demo.web.frames >= n and state["viewers"] == 1 and state["subscribers"] == 1
        # the stalled viewer got only what fitted in the sockets' buffers: it was really stalled
        assert state["viewer_frames"][0] < n / 2, state["viewer_frames"]
        assert demo.thread.is_alive()  # lingering (until stopped) with the stalled clients connected
    finally:
        demo.stop()
        for s in stalled:
            s.close()
    assert demo.stats["results"] == n


def test_a_used_port_is_one_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(LBEdgeError, match=f"127.0.0.1:{port}: the port is in use"):
            WebView("127.0.0.1", port).start()
        res = CliRunner().invoke(
            main, ["demo", "-m", str(tmp_path), "--rgb", str(tmp_path), "-l", "a,b", "--web", f"127.0.0.1:{port}"]
        )
    assert res.exit_code == 1 and "the port is in use" in res.output and "Traceback" not in res.output


def test_cli_checks_web_options(tmp_path):
    res = CliRunner().invoke(main, ["demo", "--lb-mini", "--web", "localhost"])
    assert res.exit_code == 2 and "--web" in res.output and "HOST:PORT" in res.output
    res = CliRunner().invoke(main, ["demo", "--lb-mini", "--web-linger", "3"])
    assert res.exit_code == 2 and "give --web HOST:PORT too" in res.output


def test_non_loopback_address_warns_and_missing_aiohttp_names_the_extra(monkeypatch):
    said: list[str] = []
    with WebView("0.0.0.0", 0, say=said.append) as web:
        assert web.port > 0
    assert any("reachable from other machines" in s and "no authentication" in s for s in said), said
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.setitem(sys.modules, "aiohttp.web", None)
    with pytest.raises(MissingDependency, match=r"lbedge\[web\]"):
        WebView("127.0.0.1", 0).start()
    with pytest.raises(UsageError, match="free message kind"):
        WebView().send("result", {})


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)


def save_artifact(png: Path) -> list[Path]:
    """Copy a screenshot to $LBEDGE_TEST_ARTIFACTS (when set) and build/test-artifacts/ (when writable)."""
    saved = []
    targets = [Path(os.environ["LBEDGE_TEST_ARTIFACTS"])] if os.environ.get("LBEDGE_TEST_ARTIFACTS") else []
    for folder in [*targets, ROOT / "build" / "test-artifacts"]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            saved.append(Path(shutil.copyfile(png, folder / png.name)))
        except OSError:
            continue
    return saved


@pytest.fixture
def lb_mini_root(tmp_path, lb_mini_text):
    """lb-mini's committed bundles with their text bundle beside them, as `lbedge demo --lb-mini` uses them."""
    root = shutil.copytree(LBMINI, tmp_path / "lb-mini", ignore=shutil.ignore_patterns("text", "engines"))
    shutil.copytree(lb_mini_text, root / "text", ignore=shutil.ignore_patterns("engines"))
    return root


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_web_view_in_a_headless_browser_on_lb_mini(tmp_path, lb_mini_root):
    """`lbedge demo --lb-mini --web 127.0.0.1:0` in a subprocess, its page in headless Chromium: the mosaic
    arrives (MJPEG) and the frame counter (SSE) increases; bad labels typed in the form show the server's message;
    good ones switch the labels, and results classified with the new labels_version arrive; a screenshot is saved;
    Ctrl-C stops the demo with exit status 130."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (make sysdeps: apt-get install chromium "
                    "chromium-driver)")  # fmt: skip
    from selenium import webdriver  # the test extra: not a reason to skip
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    env = {**os.environ, "LBEDGE_LB_MINI": str(lb_mini_root), "LBEDGE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbedge.cli", "demo", "--lb-mini", "--web", "127.0.0.1:0", "--scenes", "40"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
        url = None
        while url is None and proc.poll() is None:
            url = next((ln.split()[2] for ln in list(lines) if ln.startswith("web view: http://")), None)
            time.sleep(0.2)
        assert url, "".join(lines)
        driver.get(url)
        wait = WebDriverWait(driver, 300, poll_frequency=0.2)

        def frames() -> int:
            return int(driver.find_element(By.ID, "frames").text)

        wait.until(lambda d: d.execute_script("return document.getElementById('mosaic').naturalWidth") > 0)
        wait.until(lambda d: frames() > 0)
        first = frames()
        wait.until(lambda d: frames() > first)  # the counter the SSE stream carries increases
        assert driver.find_element(By.ID, "connection").text == "connected"
        assert driver.find_element(By.ID, "labels").text == "ball, box, cone, ring, bar"

        def submit(text: str) -> None:
            box = driver.find_element(By.ID, "labels-input")
            box.clear()
            box.send_keys(text)
            driver.find_element(By.ID, "labels-submit").click()

        submit("ball, ball")
        status = driver.find_element(By.ID, "label-status")
        wait.until(lambda d: status.text.startswith("error:"))
        assert "duplicate" in status.text and driver.find_element(By.ID, "labels-version").text == "0"
        new = ["ball", "box", "cone", "ring", "bar", "star"]
        submit(", ".join(new))
        wait.until(lambda d: status.text.startswith("switched"))
        assert status.text == "switched: labels version 1"
        wait.until(lambda d: d.execute_script("return window.lastResult.labels_version") == 1)
        result = driver.execute_script("return window.lastResult")
        assert set(result["update"]["scores"]) <= set(new) and set(result["fused"]["scores"]) <= set(new)
        assert driver.find_element(By.ID, "labels").text == ", ".join(new)
        assert driver.find_element(By.ID, "labels-version").text == "1"
        events = driver.find_element(By.ID, "events").text
        assert "labels switched to version 1: ball, box, cone, ring, bar, star" in events
        rows = driver.find_elements(By.CSS_SELECTOR, "#sources tr")
        assert {r.get_attribute("data-source") for r in rows} == {"rgb", "depth", "thermal", "audio"}
        wait.until(lambda d: frames() > first + 1)
        png = tmp_path / "web.png"
        assert driver.save_screenshot(str(png))
        assert cv2.imread(str(png)).shape[1] >= 1000
        save_artifact(png)
        assert proc.poll() is None, "".join(lines)  # still running: the switch happened live
    finally:
        if driver is not None:
            driver.quit()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the demo, the pipeline and the web view stop cleanly
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(10)
    out = "".join(lines)
    assert proc.returncode == 130 and "interrupted (SIGINT)" in out, out
    assert "[event] labels switched to version 1" in out and "Traceback" not in out


@pytest.mark.timeout(180)
def test_cli_web_view_serves_a_camera_run_and_stops_on_sigterm(tmp_path):
    """`lbedge demo -m MODEL --rgb FRAMES --loop --web 127.0.0.1:0`: results reach the view, no JSON lines are
    forced onto stdout, and SIGTERM stops the demo and the view cleanly (exit 143)."""
    pytest.importorskip("torch")
    from conftest import OFFICIAL
    from test_pipeline import colour_frames

    frames = colour_frames(tmp_path / "f", ["red", "green", "blue"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbedge.cli", "demo", "--checkpoint", str(OFFICIAL / "image"), "--rgb", str(frames),
         "--loop", "--realtime", "-l", "red,green,blue", "--web", "127.0.0.1:0"],
        cwd=tmp_path, env={**os.environ, "LBEDGE_CACHE": str(tmp_path / "cache")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        url = None
        while url is None and proc.poll() is None:
            url = next((ln.split()[2] for ln in list(lines) if ln.startswith("web view: http://")), None)
            time.sleep(0.1)
        assert url, "".join(lines)
        state = {"results": 0}
        while state["results"] < 3 and proc.poll() is None:
            state = json.loads(urllib.request.urlopen(url + "state", timeout=30).read())
            time.sleep(0.2)
        assert state["results"] >= 3 and state["sources"] == {"rgb": "image"}, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(10)
    out = "".join(lines)
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in out and "rgb:" in out, out
    assert '"labels_version"' not in out  # --web implies --headless, without JSON lines on stdout
    with pytest.raises(OSError):  # the port is closed
        urllib.request.urlopen(url + "state", timeout=5)


def test_the_web_view_imports_neither_torch_nor_aiohttp_until_it_starts():
    code = "import sys, lbedge.web, lbedge.demo; print(sorted({'torch', 'aiohttp'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.timeout(120)
def test_the_view_lingers_after_a_recording_ends_and_still_switches_labels():
    demo = Demo(ColourSource(5), linger=None)
    try:
        state = demo.web.state()
        while not state["ended"]:
            assert demo.thread.is_alive()
            time.sleep(0.05)
            state = demo.web.state()
        assert state["results"] == 5 and "the view stays up until Ctrl-C" in state["ended"]
        assert demo.web.serving and any("stays up until Ctrl-C" in s for s in demo.said)
        code, body = post_labels(demo.url("labels"), json.dumps({"labels": ["blue", "red"]}).encode())
        assert code == 200 and body["labels_version"] == 1
        while not any("labels switched to version 1" in s for s in demo.said):  # events still reach the demo
            time.sleep(0.05)
    finally:
        demo.stop()
    assert demo.stats["results"] == 5 and demo.stats["interrupted"] is None
    ends = Demo(ColourSource(3), linger=0.2)
    ends.thread.join(60)
    assert not ends.thread.is_alive() and not ends.web.serving and ends.stats["results"] == 3


def test_jpeg_without_opencv_uses_pillow(monkeypatch):
    pytest.importorskip("PIL")
    from lbedge import web

    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 2] = 255  # red, BGR
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "lbedge.opencv", None)  # as if OpenCV were missing
        jpeg = web._jpeg_encoder(90)(img)
    back = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == img.shape and back[..., 2].mean() > 240 and back[..., 0].mean() < 15
