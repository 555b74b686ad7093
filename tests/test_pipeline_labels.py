"""Pipeline.set_labels: labels change while a pipeline runs, with no result lost or classified against a
half-switched label set; bad labels raise before anything changes; a failed or overtaken switch changes nothing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import OFFICIAL, FuncBackend
from lbedge import ClipTokenizer, Encoder, InputError, LBEdgeError, PreprocessConfig
from lbedge.pipeline import Pipeline
from lbedge.sensors import ImageFolderSource
from test_pipeline import colour_frames

pytestmark = pytest.mark.timeout(120)

TOK = ClipTokenizer.from_dir(OFFICIAL / "tokenizer")
#: words of each colour: a label set may name the colours by any of them, so a label tells which set it came from
COLOUR_OF = {"red": 0, "crimson": 0, "scarlet": 0, "green": 1, "lime": 1, "blue": 2, "navy": 2}
COLOURS = ["red", "green", "blue"]
SET_A = ["red", "green", "blue"]
SET_B = ["navy", "crimson", "lime"]  # other words, other order
SET_C = ["lime", "navy", "scarlet"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


def colour_tower(gate: dict | None = None):
    """A fake text tower: a prompt's embedding is the basis vector of the colour its word names. ``gate``: words
    whose prompts wait for an Event, or raise."""
    ids = {TOK.encode(w)[0]: c for w, c in COLOUR_OF.items()}
    gate = gate or {}
    gated = {TOK.encode(w)[0]: what for w, what in gate.items()}

    def text(tokens):
        out = np.full((len(tokens), 3), 0.01, np.float32)
        for r, row in enumerate(tokens):
            for tid in row:
                what = gated.get(int(tid))
                if isinstance(what, threading.Event):
                    assert what.wait(30), "the test never released the gate"
                elif what is not None:
                    raise RuntimeError(what)
                if int(tid) in ids:
                    out[r, ids[int(tid)]] = 1.0
        return out

    return FuncBackend(text, "ids")


def colour_encoder(delay: float = 0.0, gate: dict | None = None) -> Encoder:
    def colour(x):
        if delay:
            time.sleep(delay)
        return np.eye(3, dtype=np.float32)[x.reshape(len(x), 3, -1).mean(-1).argmax(1)]

    return Encoder(
        modality="image",
        preprocess_config=PreprocessConfig("image"),
        vision=FuncBackend(colour, "x"),
        text=colour_tower(gate),
        tokenizer=TOK,
        logit_scale=50.0,
        embed_dim=3,
        text_fingerprint="fake-colours",
    )


def word_for(colour: str, labels: list[str]) -> str:
    return next(w for w in labels if COLOUR_OF[w] == COLOURS.index(colour))


def test_labels_switch_while_running_loses_and_mislabels_nothing(tmp_path):
    colours = [COLOURS[i % 3] for i in range(90)]
    src = ImageFolderSource(colour_frames(tmp_path / "f", colours))
    sets = {0: SET_A}
    futures = []
    results = []
    with Pipeline({"cam": src}, colour_encoder(delay=0.004), SET_A, smoothing="ema", max_batch=2) as p:
        for r in p:
            results.append(r)
            if len(results) == 15:
                futures.append(p.set_labels(SET_B))
            if len(results) == 45:
                assert futures[0].result(timeout=30) == 1  # in use by now
                futures.append(p.set_labels(SET_C))
    sets[1], sets[2] = SET_B, SET_C
    assert futures[1].result(timeout=30) == 2
    # every frame has its result, once, in order
    assert [r.update.sequence for r in results] == list(range(90))
    versions = [r.labels_version for r in results]
    assert versions == sorted(versions) and set(versions) == {0, 1, 2}
    for r in results:
        labels = sets[r.labels_version]
        colour = colours[r.update.sequence]
        # classified, named and scored against exactly the set the result names
        assert r.update.labels_version == r.labels_version
        assert r.update.raw_label == word_for(colour, labels)
        assert set(r.update.scores) <= set(labels) and set(r.fused_scores) <= set(labels)
        assert r.update.label in labels and r.fused_label in labels
    # smoothing starts afresh with a new set: its first result is that frame's own label
    for v in (1, 2):
        first = next(r for r in results if r.labels_version == v)
        assert first.update.label == first.update.raw_label
    assert any("labels switched to version 1" in e for e in p.event_log)
    assert p.label_set() == (2, SET_C)


def test_bad_labels_raise_at_once_and_change_nothing(tmp_path):
    src = ImageFolderSource(colour_frames(tmp_path / "f", ["red"] * 3))
    p = Pipeline({"cam": src}, colour_encoder(), SET_A)
    for bad in ("red", ["red", "red"], [], ["red", ""], [3]):
        with pytest.raises(InputError):
            p.set_labels(bad)
    with pytest.raises(InputError, match="{}"):
        p.set_labels(SET_B, templates=["no place for the label"])
    assert p.label_set() == (0, SET_A)
    with p:
        assert {r.labels_version for r in p} == {0}


def test_a_switch_whose_prompts_fail_keeps_the_labels(tmp_path):
    src = ImageFolderSource(colour_frames(tmp_path / "f", COLOURS * 4))
    p = Pipeline({"cam": src}, colour_encoder(gate={"scarlet": "the text tower failed"}), SET_A)
    future = p.set_labels(SET_C)  # embedding "scarlet" fails
    with pytest.raises(LBEdgeError, match="could not be embedded.*text tower failed"):
        future.result(timeout=30)
    assert p.label_set() == (0, SET_A)
    with p:
        results = list(p)
    assert len(results) == 12 and all(r.labels_version == 0 for r in results)
    assert all(r.update.raw_label == COLOURS[r.update.sequence % 3] for r in results)
    assert any("labels version 1 not used" in e for e in p.event_log)


def test_a_slower_older_switch_never_overrides_a_newer_one(tmp_path):
    gate = threading.Event()
    src = ImageFolderSource(colour_frames(tmp_path / "f", COLOURS))
    p = Pipeline({"cam": src}, colour_encoder(gate={"scarlet": gate}), SET_A)
    older = p.set_labels(SET_C)  # waits at "scarlet" until released
    newer = p.set_labels(SET_B)
    assert newer.result(timeout=30) == 2
    gate.set()
    with pytest.raises(LBEdgeError, match="superseded by version 2"):
        older.result(timeout=30)
    assert p.label_set() == (2, SET_B)
    with p:
        results = list(p)
    assert [r.update.raw_label for r in results] == [word_for(c, SET_B) for c in COLOURS]
    assert {r.labels_version for r in results} == {2}


def test_labels_set_before_start_apply_to_every_result(tmp_path):
    src = ImageFolderSource(colour_frames(tmp_path / "f", COLOURS))
    p = Pipeline({"cam": src}, colour_encoder(), SET_A, top_k=2)
    assert p.set_labels(SET_B).result(timeout=30) == 1
    with p:
        results = list(p)
    assert [r.update.raw_label for r in results] == [word_for(c, SET_B) for c in COLOURS]
    assert all(len(r.update.scores) == 2 for r in results)
    assert not [t for t in threading.enumerate() if t.name.startswith("lbedge-labels")]


def test_fusion_by_device_stamps(tmp_path):
    """With sync_clock="device", fusion compares the sensors' own stamps, not the host's reading times."""
    from lbedge.frames import Frame

    class Stamped:
        live, modality = False, "image"

        def __init__(self, name, stamps, colour):
            self.name, self.stamps, self.colour, self.i = name, stamps, colour, 0

        def open(self):
            pass

        def close(self):
            pass

        def read(self):
            if self.i >= len(self.stamps):
                return None
            img = np.zeros((8, 8, 3), np.uint8)
            img[..., COLOURS.index(self.colour)] = 255
            self.i += 1
            return Frame(img, "image", time.monotonic(), self.i - 1, device_timestamp=self.stamps[self.i - 1])

    a = Stamped("a", [100.0], "red")
    b = Stamped("b", [100.05], "blue")
    c = Stamped("c", [500.0], "green")  # read at the same moment, stamped minutes later
    with Pipeline({"a": a, "b": b, "c": c}, colour_encoder(), SET_A, smoothing="none", sync_clock="device") as p:
        results = list(p)
    assert len(results) == 3
    # a and b (50 ms apart) are fused by whichever came last; c never is, and fuses only itself
    ab = [r for r in results if r.update.source in ("a", "b")]
    assert set(ab[-1].fused_sources) == {"a", "b"} and ab[-1].fused_scores["red"] == pytest.approx(0.5, abs=0.01)
    assert next(r for r in results if r.update.source == "c").fused_sources == ["c"]
    assert all("c" not in r.fused_sources for r in ab)
    with pytest.raises(LBEdgeError, match="sync_clock"):
        Pipeline({"a": a}, colour_encoder(), SET_A, sync_clock="gps")
