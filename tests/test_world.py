"""The synthetic world (lbedge.lbmini.world): deterministic, consistent across sensors, attributes with measurable
effects, splits and phrasings that never leak, and files that lbedge's training reader, preprocessing and
replay sources take as they are."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lbedge.lbmini import world as W

SR = W.SAMPLE_RATE


def _scene(category: str = "ball", **kw) -> W.Scene:
    base = dict(
        colour="red",
        size="large",
        position="center",
        count=1,
        motion="still",
        temperature="warm",
        distance="near",
        loudness="loud",
        seed=7,
    )
    base.update(kw)
    return W.Scene(category, **base)


# --- determinism ---------------------------------------------------------------------------------------------------
def test_same_seed_same_world():
    a, b = W.sample_scenes(6, "train", seed=3), W.sample_scenes(6, "train", seed=3)
    assert a == b
    assert W.sample_scenes(6, "train", seed=4) != a
    ra, rb = W.render(a[2], size=64, frames=3, audio_seconds=0.5), W.render(b[2], size=64, frames=3, audio_seconds=0.5)
    for name in ("rgb", "depth_mm", "thermal_ck", "audio", "mask"):
        np.testing.assert_array_equal(getattr(ra, name), getattr(rb, name))
    assert W.captions(a[2], "depth") == W.captions(b[2], "depth")


def test_scene_i_does_not_depend_on_what_else_is_generated():
    many = W.sample_scenes(20, "heldout", seed=9)
    assert W.sample_scenes(5, "heldout", seed=9) == many[:5]
    assert W.sample_scenes(3, "heldout", seed=9, start=12) == many[12:15]
    assert W.sample_scene(17, "heldout", seed=9) == many[17]
    # layout and sound do not depend on image size, frame count or clip length
    s = many[4]
    small, big = W.render(s, size=64, frames=2, audio_seconds=1.0), W.render(s, size=128, frames=8, audio_seconds=1.0)
    assert abs(small.mask[-1].mean() - big.mask[-1].mean()) < 0.01 + 0.2 * big.mask[-1].mean()
    np.testing.assert_array_equal(small.audio, big.audio)


def test_scene_validates_attributes():
    with pytest.raises(ValueError, match="colour"):
        W.Scene("ball", colour="orange")
    with pytest.raises(ValueError, match="category"):
        W.Scene("cube")


# --- one world, every sensor -------------------------------------------------------------------------------------
@pytest.mark.parametrize("category", W.CATEGORIES)
def test_sensors_are_geometrically_consistent(category):
    s = _scene(
        category, colour="blue", count=2, position="left", distance="near", size="small", temperature="cold", seed=21
    )
    r, empty = W.render(s, frames=2, audio_seconds=0.1), W.render(s, frames=2, audio_seconds=0.1, objects=False)
    assert r.rgb.shape == (2, 128, 128, 3) and r.rgb.dtype == np.uint8
    assert r.depth_mm.shape == r.thermal_ck.shape == r.mask.shape == (2, 128, 128)
    assert r.depth_mm.dtype == r.thermal_ck.dtype == np.uint16
    assert not empty.mask.any()
    m = r.mask[1]
    assert m.sum() > 30
    # depth: object pixels are in front of what the empty scene shows there
    d, bg = r.depth_mm[1].astype(np.int64), empty.depth_mm[1].astype(np.int64)
    valid = m & (d > 0) & (bg > 0)
    assert (d[valid] <= bg[valid]).all() and (d[valid] < bg[valid]).mean() > 0.95
    outside = ~m & (d > 0) & (bg > 0)
    assert (d[outside] == bg[outside]).mean() > 0.99
    # thermal: object pixels are not at the ambient temperature
    dt = np.abs(r.thermal_celsius(1) - empty.thermal_celsius(1))
    assert np.median(dt[m]) > 3.0 and (dt[m] > 1.0).mean() > 0.9
    # RGB: the object's pixels changed, the rest barely (shadows only)
    drgb = np.abs(r.rgb[1].astype(np.int16) - empty.rgb[1].astype(np.int16)).sum(-1)
    assert drgb[m].mean() > 60 and drgb[~m].mean() < 6


def test_depth_has_noise_and_invalid_pixels():
    r = W.render(_scene(), frames=1, audio_seconds=0.1)
    d = r.depth_mm[0]
    assert 0 < (d == 0).mean() < 0.05
    assert (d[:, :2] == 0).mean() > 0.3  # the invalid band at the left edge
    wall = d[2:10, 20:100].astype(np.float64)
    both = (wall[:, 1:] > 0) & (wall[:, :-1] > 0)
    rel = np.std(np.diff(wall, axis=1)[both]) / np.sqrt(2) / wall[wall > 0].mean()
    assert 0.005 < rel < 0.02  # ~1% depth noise
    assert 4500 < np.median(d[:10]) < 6000  # the wall at ~5 m


# --- attributes have measurable effects --------------------------------------------------------------------------
def _object_depth_m(scene: W.Scene) -> float:
    r = W.render(scene, frames=1, audio_seconds=0.1)
    d = r.depth_mm[0][r.mask[0]]
    return float(np.median(d[d > 0])) / 1000.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_distance(seed):
    near, far = _object_depth_m(_scene(distance="near", seed=seed)), _object_depth_m(_scene(distance="far", seed=seed))
    assert 0.4 < near < 1.35 and 1.5 < far < 2.4


@pytest.mark.parametrize("seed", [1, 2])
def test_size_and_perspective(seed):
    area = {}
    for size in W.SIZES:
        for dist in W.DISTANCES:
            for cat in ("box", "cone"):
                r = W.render(_scene(cat, size=size, distance=dist, seed=seed), frames=1, audio_seconds=0.1)
                area[cat, size, dist] = int(r.mask[0].sum())
    for cat in ("box", "cone"):
        for dist in W.DISTANCES:
            assert area[cat, "large", dist] > 2.5 * area[cat, "small", dist]  # same distance: large covers more
        for size in W.SIZES:
            assert area[cat, size, "near"] > 2.5 * area[cat, size, "far"]  # far looks smaller


def test_temperature():
    for seed in (1, 2, 3):
        temps = {}
        for temperature in W.TEMPERATURES:
            r = W.render(_scene(temperature=temperature, seed=seed), frames=1, audio_seconds=0.1)
            c = r.thermal_celsius(0)
            temps[temperature] = float(np.median(c[r.mask[0]]))
            ambient = float(np.median(c[~r.mask[0]]))
            assert 15.0 < ambient < 26.0
            if temperature == "hot":
                assert c.max() > 55.0 and temps["hot"] > 55.0
        assert temps["cold"] < 13.0 and 28.0 < temps["warm"] < 39.0


def test_colour():
    means = {}
    for colour in ("red", "green", "blue"):
        r = W.render(_scene(colour=colour), frames=1, audio_seconds=0.1)
        means[colour] = r.rgb[0][r.mask[0]].astype(np.float64).mean(0)
    assert np.argmax(means["red"]) == 0 and np.argmax(means["green"]) == 1 and np.argmax(means["blue"]) == 2


def test_count_position_and_motion():
    import cv2

    r = W.render(_scene("ball", count=2, size="small", seed=4), frames=1, audio_seconds=0.1)
    n, _ = cv2.connectedComponents(r.mask[0].astype(np.uint8))
    assert n - 1 == 2
    for position, (lo, hi) in {"left": (0, 1 / 3), "center": (1 / 3, 2 / 3), "right": (2 / 3, 1)}.items():
        r = W.render(_scene(position=position, size="small", seed=5), frames=3, audio_seconds=0.1)
        x = np.nonzero(r.mask[r.middle])[1].mean() / 128
        assert lo < x < hi
    for motion, sign in (("left", -1), ("right", 1), ("still", 0)):
        r = W.render(_scene(motion=motion, size="small", seed=6), frames=8, audio_seconds=0.1)
        xs = [np.nonzero(m)[1].mean() for m in r.mask]
        shift = xs[-1] - xs[0]
        assert (abs(shift) < 1) if sign == 0 else (sign * shift > 15)
    # a still image shows motion as horizontal blur (its captions say "moving", without a direction)
    sharpness = {}
    for motion in ("still", "right"):
        r = W.render(_scene("box", motion=motion, size="large", seed=6), frames=1, audio_seconds=0.1)
        rows = r.mask[0].any(1)
        edges = np.abs(np.diff(r.rgb[0].astype(np.int16), axis=1)).sum(-1)[rows].max(1)  # steepest step per row
        sharpness[motion] = np.median(edges)
    assert sharpness["right"] < 0.6 * sharpness["still"]


def _dominant_track(audio: np.ndarray, sr: int = SR) -> tuple[np.ndarray, np.ndarray]:
    """Dominant frequency of each 32 ms frame with enough energy, and the power spectrum summed over time."""
    n, hop = 512, 256
    frames = np.lib.stride_tricks.sliding_window_view(audio, n)[::hop] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    energy = power.sum(1)
    loud = energy > 0.05 * energy.max()
    freqs = np.fft.rfftfreq(n, 1 / sr)
    return freqs[power[loud].argmax(1)], power.sum(0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sound_signatures(seed):
    freqs = np.fft.rfftfreq(512, 1 / SR)
    for category in W.CATEGORIES:
        audio = W.render_audio(_scene(category, seed=seed), 2.0)
        assert audio.dtype == np.float32 and audio.shape == (2 * SR,) and np.abs(audio).max() <= 1.0
        track, spectrum = _dominant_track(audio)
        steps = np.diff(track)
        low_share = spectrum[freqs < 500].sum() / spectrum.sum()
        below_1k = spectrum[freqs < 1000].sum() / spectrum.sum()
        if category == "cone":
            assert (steps > 0).sum() > 3 * (steps < 0).sum()  # rising chirps
        elif category == "bar":
            assert (steps < 0).sum() > 3 * (steps > 0).sum()  # falling chirps
        elif category == "box":
            assert below_1k > 0.85 and np.median(track) < 400  # low hum
        elif category == "ring":
            assert 1400 < np.median(track) < 2600 and low_share < 0.1  # high bell
        elif category == "ball":  # clicks: short bursts, mostly quiet
            env = np.abs(audio).reshape(-1, 160).max(1)  # 10 ms peaks
            assert (env > 0.3 * env.max()).mean() < 0.35 and (env > 0.3 * env.max()).sum() >= 4


def test_loudness_and_empty_sound():
    loud = W.render_audio(_scene("box", loudness="loud"), 1.0)
    quiet = W.render_audio(_scene("box", loudness="quiet"), 1.0)
    assert np.sqrt(np.mean(loud**2)) > 2 * np.sqrt(np.mean(quiet**2))
    silence = W.render(_scene("box"), frames=1, audio_seconds=1.0, objects=False).audio
    assert 0 < np.sqrt(np.mean(silence**2)) < 0.02


# --- splits and phrasings ------------------------------------------------------------------------------------------
def test_heldout_combinations_never_leak():
    held = W.HELDOUT_COLOURS | W.HELDOUT_TEMPERATURES
    for split in ("train", "val"):
        scenes = W.sample_scenes(400, split, seed=1)
        pairs = {(s.category, s.colour) for s in scenes} | {(s.category, s.temperature) for s in scenes}
        assert not pairs & held
        assert len({(s.category, s.colour) for s in scenes}) == 30 - len(W.HELDOUT_COLOURS)  # all others occur
    heldout = W.sample_scenes(200, "heldout", seed=1)
    assert all(s.heldout_pairs for s in heldout)
    assert {(s.category, s.colour) for s in heldout} & W.HELDOUT_COLOURS == W.HELDOUT_COLOURS
    assert {(s.category, s.temperature) for s in heldout} & W.HELDOUT_TEMPERATURES == W.HELDOUT_TEMPERATURES
    seeds = {split: {s.seed for s in W.sample_scenes(100, split, seed=1)} for split in W.SPLITS}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["heldout"])


def test_heldout_phrasing_is_disjoint():
    assert not W.templates("train") & W.templates("heldout")
    assert W.templates("val") == W.templates("train")
    for scene in W.sample_scenes(30, "train", seed=2):
        for modality in (None,) + W.MODALITIES:
            train, held = W.captions(scene, modality, "train"), W.captions(scene, modality, "heldout")
            assert train[0] == held[0] == scene.label  # the canonical zero-shot label
            assert not set(train[1:]) & set(held[1:])


WORDS = {
    "colour": set(W.COLOURS),
    "temperature": {"cold", "warm", "hot", "temperature"},
    "distance": {"camera", "sensor", "distance", "near", "far"},
    "sound": {"sound", "hum", "humming", "whistle", "bell", "knocking", "drone", "chime", "tone"},
    "motion": {"moving", "still", "heading", "motion"},
}


def test_captions_mention_only_what_a_sensor_perceives():
    for scene in W.sample_scenes(40, "train", seed=3):
        for modality in W.MODALITIES:
            for split in ("train", "heldout"):
                texts = W.captions(scene, modality, split)
                assert texts[0] == W.label(scene.category) and len(texts) >= 5
                words = set(re.findall(r"[a-z]+", " ".join(texts).lower()))
                for attribute, vocab in WORDS.items():
                    if attribute not in W.PERCEIVABLE[modality]:
                        assert not words & vocab, (modality, attribute, texts)
                noun = scene.category if scene.count == 1 or modality == "audio" else W._PLURAL[scene.category]
                assert all(scene.category in t or noun in t for t in texts)
        full = " ".join(W.captions(scene))
        assert scene.colour in full and scene.size in full and W.TRAIN_PHRASING.sounds[scene.category] in full
    image = W.captions(_scene(motion="left"), "image")
    video = W.captions(_scene(motion="left"), "video")
    assert not any("left" in t for t in image) and any("moving left" in t for t in video)


# --- files ----------------------------------------------------------------------------------------------------------
def test_write_dataset_reads_and_preprocesses(tmp_path):
    import cv2

    from lbedge import PreprocessConfig, Preprocessor
    from lbedge.train.data import read_samples

    out = W.write_dataset(
        tmp_path,
        n_train=4,
        n_val=2,
        seed=5,
        n_heldout=2,
        size=64,
        frames=4,
        audio_seconds=1.0,
        modalities=W.DATASET_MODALITIES + ("video",),
    )
    assert out["counts"] == {"train": 4, "val": 2, "heldout": 2}
    train_scenes = W.sample_scenes(4, "train", 5)
    for modality in W.DATASET_MODALITIES + ("video",):
        pre = Preprocessor(PreprocessConfig(modality))
        for split, n in out["counts"].items():
            good, bad = read_samples(out["manifests"][modality][split], modality)
            assert not bad and len(good) == n
            assert all(s.texts[0] in W.LABELS and len(s.texts) >= 5 for s in good)
            x = pre.one(good[0].path)
            assert x.shape == pre.input_shape and np.isfinite(x).all()
        rows = [json.loads(line) for line in open(out["manifests"][modality]["train"], encoding="utf-8")]
        assert [
            W.Scene(**{k: v for k, v in r["scene"].items() if k not in ("index", "frame")}) for r in rows
        ] == train_scenes
        assert rows[0]["texts"] == W.captions(train_scenes[0], modality, "train")
    rendered = W.render(train_scenes[0], size=64, frames=4, audio_seconds=1.0)

    def png(modality):
        return cv2.imread(str(tmp_path / modality / "train" / "000000.png"), cv2.IMREAD_UNCHANGED)

    np.testing.assert_array_equal(png("image")[..., ::-1], rendered.rgb[rendered.middle])
    np.testing.assert_array_equal(png("depth"), rendered.depth_mm[rendered.middle])
    assert png("depth").dtype == np.uint16
    np.testing.assert_array_equal(png("thermal"), rendered.thermal_image()[..., 0])  # the live source's AGC
    held = [json.loads(line) for line in open(out["manifests"]["depth"]["heldout"], encoding="utf-8")]
    scene = W.Scene(**{k: v for k, v in held[0]["scene"].items() if k not in ("index", "frame")})
    assert scene.heldout_pairs and held[0]["texts"] == W.captions(scene, "depth", "heldout")


def test_write_recordings_replay(tmp_path):
    from lbedge.sensors import AudioFileSource, DepthSequenceSource, ThermalSequenceSource, VideoFileSource

    scenes = W.sample_scenes(3, "heldout", seed=2)
    fps, per = 8.0, 1.0
    out = W.write_recordings(tmp_path, scenes, fps=fps, seconds_per_scene=per, size=64)
    n = 3 * int(fps * per)
    assert out["frames"] == n
    truth = json.loads(out["truth"].read_text())
    assert [t["frames"] for t in truth["scenes"]] == [[0, 8], [8, 16], [16, 24]]
    assert [t["audio_samples"] for t in truth["scenes"]] == [[i * SR, (i + 1) * SR] for i in range(3)]
    assert [t["attributes"] for t in truth["scenes"]] == [s.attributes() for s in scenes]
    assert [t["label"] for t in truth["scenes"]] == [s.label for s in scenes]
    rendered = [W.render(s, size=64, frames=8, audio_seconds=per) for s in scenes]

    video = list(VideoFileSource(out["rgb"]))
    assert len(video) == n and video[0].data.shape == (64, 64, 3)
    assert np.abs(video[12].data.astype(int) - rendered[1].rgb[4]).mean() < 12  # lossy, but the same frame

    thermal = list(ThermalSequenceSource(out["thermal"], profile="lepton"))
    assert len(thermal) == n
    np.testing.assert_array_equal(thermal[20].meta["raw"], rendered[2].thermal_ck[4])
    np.testing.assert_array_equal(thermal[20].data, rendered[2].thermal_image(4))
    assert np.allclose(thermal[20].meta["celsius"], rendered[2].thermal_celsius(4))

    depth = list(DepthSequenceSource(out["depth_frames"]))
    assert len(depth) == n
    np.testing.assert_array_equal(depth[9].data, rendered[1].depth_mm[1])

    windows = list(AudioFileSource(out["audio"], window=per, hop=per))
    assert len(windows) == 3 and windows[0].meta["sample_rate"] == SR
    for w, r in zip(windows, rendered):
        assert np.abs(w.data[0] - r.audio).max() < 1e-4  # 16-bit PCM

    pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed")
    from lbedge.sensors import RealSenseRecording

    assert out["depth"] is not None and truth["files"]["depth"] == out["depth"].name
    frames = list(RealSenseRecording(out["depth"], color=True))
    assert len(frames) in (n - 1, n)  # the syncer may drop one
    for f in frames:
        k = f.meta["frame_number"]
        scene, t = divmod(k, 8)
        np.testing.assert_array_equal(f.data, rendered[scene].depth_mm[t])
        np.testing.assert_array_equal(f.meta["color"], rendered[scene].rgb[t])
