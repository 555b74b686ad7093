"""Encoder lifetime and contracts: close() and ``with`` release every backend (ONNX Runtime sessions; a TensorRT
engine's context, CUDA graphs, device and pinned buffers and stream, against a stand-in cuda-python that records
its calls), streaming ``embed``, fingerprints, and the PEP 561 marker."""

from __future__ import annotations

import ctypes
import gc
import logging
import sys
import threading
import tracemalloc
import types
import weakref
from pathlib import Path

import numpy as np
import pytest

from conftest import OFFICIAL, FuncBackend
from lbedge import CheckpointError, ClipTokenizer, Encoder, InputError, PreprocessConfig, UsageError
from lbedge.backends import close_backends

ROOT = Path(__file__).resolve().parents[1]
LBMINI = ROOT / "lbmini" / "bundles"
TOK = ClipTokenizer.from_dir(OFFICIAL / "tokenizer")


class ClosingBackend(FuncBackend):
    """A FuncBackend with close(), counting calls; ``fail`` makes close() raise (after counting)."""

    def __init__(self, fn, input_name: str, fail: bool = False):
        super().__init__(fn, input_name)
        self.closes, self.fail = 0, fail

    def close(self):
        self.closes += 1
        if self.fail:
            raise RuntimeError(f"{self.input_names[0]} would not close")


def constant(dim: int = 4):
    return lambda x: np.ones((len(x), dim), np.float32)


def make_encoder(vision=None, text=None, **kw) -> Encoder:
    return Encoder(
        modality="image",
        preprocess_config=PreprocessConfig("image"),
        vision=vision or ClosingBackend(constant(), "pixel_values"),
        text=text or ClosingBackend(constant(), "input_ids"),
        tokenizer=TOK,
        logit_scale=100.0,
        embed_dim=4,
        **{"text_fingerprint": "fp", **kw},
    )


# --- close() and with -------------------------------------------------------------------------------------------


def test_close_releases_both_towers_once_and_refuses_use_afterwards():
    vision, text = ClosingBackend(constant(), "pixel_values"), ClosingBackend(constant(), "input_ids")
    enc = make_encoder(vision, text)
    with enc as same:
        assert same is enc and not enc.closed
        enc.embed(np.zeros((2, 3, 224, 224), np.float32))
    assert enc.closed and (vision.closes, text.closes) == (1, 1)
    enc.close()  # twice is fine
    assert (vision.closes, text.closes) == (1, 1)
    for use in (
        lambda: enc.embed(np.zeros((1, 3, 224, 224), np.float32)),
        lambda: enc.embed_text(["a cat"]),
        lambda: enc.embed_text([]),
        lambda: enc.vision,
        lambda: enc.text,
    ):
        with pytest.raises(UsageError, match="was closed.*load it again"):
            use()
    with pytest.raises(UsageError, match="was closed"):
        with enc:
            pass
    assert enc.preprocess(np.zeros((8, 8, 3), np.uint8)).shape == (1, 3, 224, 224)  # no model needed
    assert enc.tokenize(["a cat"])[0].shape == (1, 77)
    assert "closed" in repr(enc)


def test_a_text_tower_never_loaded_is_never_loaded_by_close_and_a_loaded_one_is_closed():
    made = []

    def factory():
        made.append(ClosingBackend(constant(), "input_ids"))
        return made[-1]

    enc = make_encoder(text=factory)
    enc.close()
    assert made == []
    enc = make_encoder(text=factory)
    enc.embed_text(["a cat", "a dog"])
    enc.embed_text(["a car"])
    enc.close()
    assert len(made) == 1 and made[0].closes == 1


def test_lazy_text_tower_is_made_once_across_threads():
    made = []
    gate = threading.Event()

    def slow_factory():
        gate.wait(1.0)
        made.append(ClosingBackend(constant(), "input_ids"))
        return made[-1]

    enc = make_encoder(text=slow_factory)
    threads = [threading.Thread(target=lambda: enc.embed_text(["a cat"])) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert len(made) == 1


def test_a_text_factory_must_return_a_backend():
    enc = make_encoder(text=lambda: "not a backend")
    with pytest.raises(UsageError, match="returned str, not a backend with run"):
        enc.embed_text(["a cat"])


def test_a_failing_close_still_closes_the_other_tower_and_is_raised():
    vision = ClosingBackend(constant(), "pixel_values", fail=True)
    text = ClosingBackend(constant(), "input_ids")
    enc = make_encoder(vision, text)
    with pytest.raises(RuntimeError, match="pixel_values would not close"):
        enc.close()
    assert text.closes == 1 and enc.closed
    enc.close()  # nothing left to release: no second attempt
    assert vision.closes == 1


def test_with_block_error_is_not_masked_by_a_failing_close(caplog):
    enc = make_encoder(ClosingBackend(constant(), "pixel_values", fail=True))
    with caplog.at_level(logging.WARNING, logger="lbedge.encoder"), pytest.raises(KeyError, match="the real one"):
        with enc:
            raise KeyError("the real one")
    assert "would not close" in caplog.text and enc.closed


def test_close_backends_skips_none_repeats_and_backends_without_close():
    a = ClosingBackend(constant(), "a")
    close_backends(a, None, a, FuncBackend(constant(), "b"))
    assert a.closes == 1


def test_onnxruntime_sessions_are_dropped_on_close():
    pytest.importorskip("onnxruntime")
    from lbedge.backends.onnxruntime_backend import OnnxRuntimeBackend

    vision = OnnxRuntimeBackend(LBMINI / "image" / "vision.fp32.onnx", providers=["CPUExecutionProvider"])
    x = np.zeros((1, *vision._in[vision.input_names[0]][1][1:]), np.float32)
    vision.run({vision.input_names[0]: x})
    vision.close()
    assert vision.session is None and vision.closed
    vision.close()
    with pytest.raises(UsageError, match="session of vision.fp32.onnx was closed"):
        vision.run({vision.input_names[0]: x})


def test_bundle_encoder_closes_its_sessions_text_included(lb_mini_copy):
    import lbedge

    with lbedge.load_bundle(lb_mini_copy / "image", backend="onnxruntime") as enc:
        enc.embed_text(["a ball"])
        vision, text = enc.vision, enc.text
    assert vision.session is None and text.session is None
    with pytest.raises(UsageError, match=r"lbedge.load\("):
        enc.embed_text(["a ball"])


# --- TensorRT, against a stand-in cuda-python and engine ----------------------------------------------------------


class FakeCudart:
    """The cuda-python runtime calls TensorRTBackend makes: (error, *values) tuples, each call logged. Memory is
    real (ctypes buffers, kept alive until the test ends so a use after free reads garbage instead of crashing);
    ``fail`` maps a call name to the error code it returns."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeGlobal = 0

    def __init__(self, fail=None):
        self.calls: list[tuple] = []
        self.fail = dict(fail or {})
        self.memory: dict[int, ctypes.Array] = {}
        self.graphs = 0

    def _log(self, name, *args):
        self.calls.append((name, *args))
        return self.fail.get(name, 0)

    def _alloc(self, name, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        self.memory[ctypes.addressof(buf)] = buf
        return self._log(name, nbytes), ctypes.addressof(buf)

    def cudaDriverGetVersion(self):
        return 0, 12060

    def cudaRuntimeGetVersion(self):
        return 0, 12060

    def cudaGetDeviceProperties(self, device):
        return 0, types.SimpleNamespace(name=b"Fake", major=9, minor=0)

    def cudaSetDevice(self, device):
        return (self._log("cudaSetDevice", device),)

    def cudaStreamCreate(self):
        return self._log("cudaStreamCreate"), 0x5EA

    def cudaMalloc(self, nbytes):
        return self._alloc("cudaMalloc", nbytes)

    def cudaMallocHost(self, nbytes):
        return self._alloc("cudaMallocHost", nbytes)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return (self._log("cudaMemcpyAsync", kind),)

    def cudaStreamSynchronize(self, stream):
        return (self._log("cudaStreamSynchronize", stream),)

    def cudaStreamBeginCapture(self, stream, mode):
        return (self._log("cudaStreamBeginCapture", stream),)

    def cudaStreamEndCapture(self, stream):
        self.graphs += 1
        return self._log("cudaStreamEndCapture", stream), f"graph-{self.graphs}"

    def cudaGraphInstantiate(self, graph, flags):
        return self._log("cudaGraphInstantiate", graph), f"exec-{graph}"

    def cudaGraphLaunch(self, graph_exec, stream):
        return (self._log("cudaGraphLaunch", graph_exec),)

    def cudaGraphDestroy(self, graph):
        return (self._log("cudaGraphDestroy", graph),)

    def cudaGraphExecDestroy(self, graph_exec):
        return (self._log("cudaGraphExecDestroy", graph_exec),)

    def cudaFree(self, ptr):
        return (self._log("cudaFree", ptr),)

    def cudaFreeHost(self, ptr):
        return (self._log("cudaFreeHost", ptr),)

    def cudaStreamDestroy(self, stream):
        return (self._log("cudaStreamDestroy", stream),)

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


class FakeContext:
    """An execution context whose engine doubles its input ``x [B, 3]`` into ``y [B, 3]`` in "device" memory."""

    def __init__(self, undefined_output: bool):
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.undefined_output = undefined_output

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)

    def get_tensor_shape(self, name):
        return (-1, 3) if self.undefined_output else self.shapes["x"]

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        n = int(np.prod(self.shapes["x"]))
        src = np.frombuffer((ctypes.c_float * n).from_address(self.addresses["x"]), np.float32)
        dst = np.frombuffer((ctypes.c_float * n).from_address(self.addresses["y"]), np.float32)
        dst[:] = 2 * src
        return True


class FakeEngine:
    num_io_tensors = 2

    def __init__(self, undefined_output: bool = False):
        self.undefined_output = undefined_output
        self.contexts: list[weakref.ref] = []

    def get_tensor_name(self, i):
        return ("x", "y")[i]

    def get_tensor_mode(self, name):
        return "in" if name == "x" else "out"

    def get_tensor_dtype(self, name):
        return "float"

    def get_tensor_profile_shape(self, name, profile):
        return (1, 3), (4, 3), (4, 3)

    def create_execution_context(self):
        context = FakeContext(self.undefined_output)
        self.contexts.append(weakref.ref(context))
        return context


def fake_tensorrt(engines: list) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in")
    trt.nptype = lambda dtype: np.float32

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class Runtime:
        num_DLA_cores = 0

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return engines.pop(0)

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


@pytest.fixture
def trt_env(monkeypatch, tmp_path):
    """A TensorRTBackend factory on the stand-ins; the manifest check is left out (tests/test_tensorrt.py has it)."""
    from lbedge.backends import tensorrt_backend as tb

    def make(cudart=None, engine=None, **kw):
        cudart = cudart or FakeCudart()
        engine = engine or FakeEngine()
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([engine]))
        monkeypatch.setattr(tb, "_cudart", lambda: cudart)
        monkeypatch.setattr(tb.EngineManifest, "load", staticmethod(lambda path: types.SimpleNamespace(build_flags={})))
        monkeypatch.setattr(tb, "require_compatible", lambda *a, **k: None)
        (tmp_path / "vision.engine").write_bytes(b"engine")
        return tb.TensorRTBackend(tmp_path / "vision.engine", verify=False, **kw), cudart, engine

    return make


def test_tensorrt_close_releases_everything_explicitly_in_order(trt_env):
    backend, cudart, engine = trt_env(cuda_graph=True)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(backend.run({"x": x})["y"], 2 * x)
    backend.run({"x": x[:1]})  # a second input shape: a second CUDA graph
    assert [c[1] for c in cudart.named("cudaGraphDestroy")] == ["graph-1", "graph-2"]  # freed once instantiated
    mallocs = [c for c in cudart.calls if c[0] in ("cudaMalloc", "cudaMallocHost")]
    assert len(mallocs) == 4  # x and y, device and pinned host each
    context = engine.contexts[0]
    engine_ref = weakref.ref(engine)
    del engine
    cudart.calls.clear()

    backend.close()
    gc.collect()
    names = [c[0] for c in cudart.calls]
    assert names[:2] == ["cudaSetDevice", "cudaStreamSynchronize"]  # pending work first
    assert sorted(c[1] for c in cudart.named("cudaGraphExecDestroy")) == ["exec-graph-1", "exec-graph-2"]
    assert names.index("cudaGraphExecDestroy") < names.index("cudaFree")
    assert names[-1] == "cudaStreamDestroy" and cudart.named("cudaStreamDestroy") == [("cudaStreamDestroy", 0x5EA)]
    freed = {c[1] for c in cudart.named("cudaFree")} | {c[1] for c in cudart.named("cudaFreeHost")}
    assert freed == set(cudart.memory) and len(cudart.named("cudaFree")) == len(cudart.named("cudaFreeHost")) == 2
    assert context() is None and engine_ref() is None  # context and engine released, not only forgotten
    assert backend.closed and backend.context is None and backend.engine is None and backend.stream is None

    cudart.calls.clear()
    backend.close()
    del backend
    gc.collect()
    assert cudart.calls == []  # closed once, by close(); nothing again from __del__


def test_tensorrt_run_after_close_is_a_clear_error(trt_env):
    backend, _, _ = trt_env()
    backend.close()
    with pytest.raises(UsageError, match="TensorRT engine vision.engine was closed: load the model again"):
        backend.run({"x": np.zeros((1, 3), np.float32)})


def test_tensorrt_close_attempts_every_release_and_names_the_failures(trt_env):
    cudart = FakeCudart()
    backend, _, _ = trt_env(cudart)
    cudart.fail["cudaFree"] = 700  # cudaErrorIllegalAddress: the context is broken
    from lbedge.errors import EngineMismatch

    with pytest.raises(EngineMismatch, match=r"cudaFree \(CUDA error 700\).*restart the process"):
        backend.close()
    assert len(cudart.named("cudaFree")) == 2 and len(cudart.named("cudaFreeHost")) == 2
    assert cudart.named("cudaStreamDestroy")
    backend.close()  # reported once


def test_tensorrt_failed_load_frees_what_it_allocated(trt_env):
    from lbedge.errors import EngineMismatch

    cudart = FakeCudart()
    with pytest.raises(EngineMismatch, match="leaves output 'y' shape"):
        trt_env(cudart, FakeEngine(undefined_output=True))
    assert len(cudart.named("cudaMalloc")) == 1 and len(cudart.named("cudaFree")) == 1  # the input's buffer
    assert len(cudart.named("cudaFreeHost")) == 1 and cudart.named("cudaStreamDestroy")


def test_tensorrt_close_waits_for_a_run_in_progress(trt_env):
    backend, cudart, engine = trt_env()
    started, release = threading.Event(), threading.Event()
    context = backend.context
    inner = context.execute_async_v3

    def slow(stream):
        started.set()
        release.wait(5)
        return inner(stream)

    context.execute_async_v3 = slow
    out = {}
    worker = threading.Thread(target=lambda: out.update(backend.run({"x": np.ones((1, 3), np.float32)})))
    worker.start()
    started.wait(5)
    closer = threading.Thread(target=backend.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive() and not cudart.named("cudaFree")  # the buffers the run uses are not freed under it
    release.set()
    worker.join(5)
    closer.join(5)
    np.testing.assert_array_equal(out["y"], [[2, 2, 2]])
    assert len(cudart.named("cudaFree")) == 2


def test_encoder_close_releases_a_tensorrt_vision_tower(trt_env):
    backend, cudart, _ = trt_env()
    backend.input_names = ("x",)
    enc = Encoder(
        modality="image",
        preprocess_config=PreprocessConfig("image"),
        vision=backend,
        text=lambda: ClosingBackend(constant(), "input_ids"),
        tokenizer=TOK,
        logit_scale=1.0,
        embed_dim=3,
    )
    with enc:
        pass
    assert backend.closed and len(cudart.named("cudaFree")) == 2


# --- embed streams raw inputs ---------------------------------------------------------------------------------


def frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def test_embed_preprocesses_one_batch_at_a_time_with_the_same_result():
    events = []
    vision = FuncBackend(lambda x: (events.append(("run", len(x))), x.reshape(len(x), -1)[:, :4] + 1)[1], "x")
    enc = make_encoder(vision, batch_size=2)
    one = enc.preprocessor.one
    enc.preprocessor.one = lambda item, **kw: (events.append("pre"), one(item, **kw))[1]
    got = enc.embed(frames(5))
    assert events == ["pre", "pre", ("run", 2), "pre", "pre", ("run", 2), "pre", ("run", 1)]
    events.clear()
    ref = enc.embed(enc.preprocess(frames(5)))
    np.testing.assert_array_equal(got, ref)


def test_embed_batches_follow_the_backends_limits():
    seen = []
    vision = FuncBackend(lambda x: (seen.append(len(x)), np.ones((len(x), 4), np.float32))[1], "x")
    vision.max_batch, vision.static_batch = 3, True
    enc = make_encoder(vision, batch_size=8)
    assert enc.embed(frames(7)).shape == (7, 4)
    assert seen == [3, 3, 3]  # the last batch padded, as run_batched does for a static engine


def test_embed_memory_is_one_batch_not_the_whole_list():
    enc = make_encoder(batch_size=2)
    items = frames(24)  # 24 x 602 KB of model input if preprocessed at once
    tracemalloc.start()
    try:
        enc.embed(items)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    batch_bytes = 2 * 3 * 224 * 224 * 4  # the whole list preprocessed at once would be 12 of these
    assert peak < 6 * batch_bytes, peak  # one batch of model input and the transform's temporaries


def test_embed_options_with_preprocessed_input_are_refused():
    enc = make_encoder()
    with pytest.raises(UsageError, match="bgr given with an already preprocessed array"):
        enc.embed(np.zeros((1, 3, 224, 224), np.float32), bgr=True)
    with pytest.raises(UsageError, match="bgr given with preprocessed samples"):
        enc.embed([np.zeros((3, 224, 224), np.float32)], bgr=True)


def test_a_list_may_hold_preprocessed_samples_among_raw_inputs():
    vision = FuncBackend(lambda x: x.reshape(len(x), -1)[:, :4] + 1, "x")
    enc = make_encoder(vision, batch_size=2)
    raw = frames(3)
    pre = enc.preprocess(raw)
    mixed = [raw[0], pre[1], pre[2:3]]  # a raw frame, a sample, a sample with a batch axis of one
    np.testing.assert_array_equal(enc.embed(mixed), enc.embed(pre))
    with pytest.raises(InputError, match="a list item is a batch of 2 preprocessed samples"):
        enc.embed([raw[0], pre[:2]])


def test_embeddings_of_the_wrong_width_are_refused():
    enc = make_encoder(FuncBackend(constant(5), "x"), text=FuncBackend(constant(3), "ids"))
    with pytest.raises(InputError, match=r"vision tower .* shape \(1, 5\) for 1 inputs, expected \(1, 4\)"):
        enc.embed(np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(InputError, match=r"text tower .* expected \(1, 4\)"):
        enc.embed_text(["a cat"])


def test_settings_are_checked():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(UsageError, match="batch_size must be a positive integer"):
            make_encoder(batch_size=bad)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(UsageError, match="logit_scale must be a positive finite number"):
            Encoder(**{**SETTINGS, "logit_scale": bad})
    with pytest.raises(UsageError, match="embed_dim must be a positive integer"):
        Encoder(**{**SETTINGS, "embed_dim": 0})


SETTINGS = dict(
    modality="image",
    preprocess_config=PreprocessConfig("image"),
    vision=FuncBackend(constant(), "x"),
    text=FuncBackend(constant(), "ids"),
    tokenizer=TOK,
    logit_scale=1.0,
    embed_dim=4,
)


# --- fingerprints ----------------------------------------------------------------------------------------------


def test_missing_text_fingerprint_says_what_to_do(tmp_path):
    enc = make_encoder(text_fingerprint=None)
    assert not enc.has_text_fingerprint
    with pytest.raises(UsageError, match="built without a text fingerprint: pass text_fingerprint="):
        _ = enc.text_fingerprint
    bundle = make_encoder(text_fingerprint=None, path=tmp_path / "bundle")
    with pytest.raises(CheckpointError, match="records no text-tower fingerprint.*lbedge build"):
        _ = bundle.text_fingerprint
    with pytest.raises(UsageError, match="must be a string"):
        _ = make_encoder(text_fingerprint=lambda: 42).text_fingerprint


def test_classifier_without_fingerprint_works_uncached(tmp_path, caplog):
    from lbedge import ZeroShotClassifier

    enc = make_encoder(text_fingerprint=None)
    with caplog.at_level(logging.WARNING, logger="lbedge.zeroshot"):
        clf = ZeroShotClassifier(enc, ["cat", "dog"], templates=["{}"], cache=tmp_path)
    assert "not cached" in caplog.text and not list(tmp_path.glob("*.npy"))
    assert clf.text_embeds.shape == (2, 4)


def test_fingerprint_is_not_computed_from_released_weights():
    calls = []
    enc = make_encoder(text_fingerprint=lambda: calls.append(1) or "f" * 64)
    enc.close()
    with pytest.raises(UsageError, match="was closed"):
        _ = enc.text_fingerprint
    assert calls == []
    kept = make_encoder(text_fingerprint=lambda: "f" * 64)
    assert kept.text_fingerprint == "f" * 64
    kept.close()
    assert kept.text_fingerprint == "f" * 64  # known before close: still known


# --- typing ----------------------------------------------------------------------------------------------------


def test_package_is_marked_typed():
    import lbedge

    assert (Path(lbedge.__file__).parent / "py.typed").is_file()
