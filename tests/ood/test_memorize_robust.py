"""Memorization robust to resampling: near-copies of training images survive other resize filters, flips,
90-degree rotations and small colour shifts, and are still caught (the planted copies use filters the generator
and the candidate reader do not: NEAREST, LANCZOS, BICUBIC, BOX)."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from tailsynth.ood.memorize import (
    check_memorization,
    copy_threshold,
    descriptor_nn,
    descriptors,
    pixel_vectors,
)

def _ood_conftest():
    """tests/ood/conftest.py's data helpers, loaded by path (`import conftest` is ambiguous across test folders)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("ood_conftest_helpers", Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FILTERS = [Image.NEAREST, Image.LANCZOS, Image.BICUBIC, Image.BOX]


def plant(img: np.ndarray, i: int, gen_size: int = 32) -> np.ndarray:
    """A training image as a careless generator would re-emit it: another size and filter, then read back at the
    original size by the candidate reader (bilinear), flipped/rotated, colour-shifted."""
    side = img.shape[0]
    x = Image.fromarray(img).resize((gen_size, gen_size), FILTERS[i % len(FILTERS)])
    x = np.asarray(x.resize((side, side), Image.BILINEAR))
    if i % 2:
        x = x[:, ::-1]
    x = np.rot90(x, i % 4)
    if i % 3 == 0:
        x = np.clip(x.astype(np.float32) * 1.05 + 6, 0, 255)
    return np.ascontiguousarray(x).astype(np.uint8)


def smooth_images(n: int, side: int = 28, seed: int = 0) -> np.ndarray:
    """Distinct smooth colour fields (blobs), like lesions on skin more than like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(n):
        img = np.zeros((side, side, 3), np.float32) + rng.uniform(120, 220, 3)
        for _ in range(3):
            cy, cx, r = rng.uniform(0.1, 0.9, 2).tolist() + [rng.uniform(0.1, 0.35)]
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img -= blob[..., None] * rng.uniform(30, 110, 3)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_planted_copies_are_caught_and_distinct_images_are_not():
    train = smooth_images(300)
    others = smooth_images(100, seed=1)
    rows = np.arange(0, 300, 15)
    planted = np.stack([plant(train[r], i) for i, r in enumerate(rows)])
    ptr = pixel_vectors(train)
    thr = copy_threshold(ptr)
    d, idx = descriptor_nn(descriptors(pixel_vectors(planted)), descriptors(ptr))
    assert (d <= thr).all(), (d.max(), thr)
    assert (idx == rows).all()  # and each is traced to the image it copies
    d_other, _ = descriptor_nn(descriptors(pixel_vectors(others)), descriptors(ptr))
    assert (d_other <= thr).mean() <= 0.05


def test_check_memorization_flags_a_resampled_copy_not_its_background():
    train = smooth_images(120)
    feats = np.random.default_rng(0).normal(size=(120, 16)).astype(np.float32)
    cand = np.stack([plant(train[7], 0), plant(train[9], 1)])  # NEAREST, then LANCZOS + flip
    cf = np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32)
    res = check_memorization(cf, pixel_vectors(cand), feats, pixel_vectors(train), 0.0, 0.0)
    assert res.memorized.tolist() == [True, True] and not res.exact_copy.any()
    assert res.copy_nn_index.tolist() == [7, 9]
    res = check_memorization(cf, pixel_vectors(cand), feats, pixel_vectors(train), 0.0, 0.0,
                             exclude=np.array([7, -1]))
    assert res.memorized.tolist() == [False, True]  # its own inpainting background is not memorization


def test_calibrated_on_real_dermamnist(dermamnist_npz):
    d = np.load(dermamnist_npz)
    train, val = d["train_images"][:1500], d["val_images"][:300]
    rng = np.random.default_rng(2)
    rows = rng.choice(len(train), 40, replace=False)
    planted = np.stack([plant(train[r], i) for i, r in enumerate(rows)])
    ptr = pixel_vectors(train)
    thr = copy_threshold(ptr)
    dt = descriptors(ptr)
    d, idx = descriptor_nn(descriptors(pixel_vectors(planted)), dt)
    assert (d <= thr).all() and (idx == rows).all()
    d_val, _ = descriptor_nn(descriptors(pixel_vectors(val)), dt)
    # DermaMNIST's splits are not lesion-grouped: a few val images are genuine near-duplicates of train images.
    assert (d_val <= thr).mean() <= 0.05


def test_select_drops_a_nearest_resized_copy(tmp_path):
    from tailsynth.classify.model import feature_model
    from tailsynth.ood.select import select_candidates

    helpers = _ood_conftest()
    _fit_tiny_classifier, _make_npz, _write_candidates = (helpers._fit_tiny_classifier, helpers._make_npz,
                                                          helpers._write_candidates)

    npz = _make_npz(tmp_path / "tiny.npz", {"train": [8, 8, 10, 8, 10, 24, 8], "val": [3, 3, 3, 3, 3, 6, 3]})
    x, y, ds = _fit_tiny_classifier(npz, tmp_path / "clf")
    df = ds.classes.index("DF")
    src = x[int(np.flatnonzero(y == df)[0])]
    # Written at the generator's size with NEAREST; the candidate reader brings it back with BILINEAR.
    copy32 = np.asarray(Image.fromarray(src).resize((32, 32), Image.NEAREST))
    rng = np.random.default_rng(9)
    items = [("DF_nearest_copy", "DF", copy32, "")]
    for i in range(8):
        items.append((f"DF_new_{i}", "DF", np.clip(np.array([170, 120, 110]) + rng.normal(0, 8, (32, 32, 3)), 0, 255)
                      .astype(np.uint8), ""))
    gen = tmp_path / "gen"
    _write_candidates(gen, items)
    select_candidates(gen, npz, feature_model(tmp_path / "clf"), tmp_path / "out", gamma=0.9)
    with open(tmp_path / "out" / "scores.csv") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert rows["DF_nearest_copy"]["memorized"] == "1" and rows["DF_nearest_copy"]["kept"] == "0"
    assert sum(r["memorized"] == "1" for r in rows.values()) == 1


def test_copies_from_a_16px_generator_are_caught_with_any_filter():
    # A tiny synthesizer works at 16 px: a training image re-emitted at that size (any PIL filter) and read back at
    # 28 px has lost more detail than the copies the threshold was once calibrated on (>= 3/4 of the side).
    train = smooth_images(300)
    rows = np.arange(0, 300, 10)
    ptr = pixel_vectors(train)
    thr = copy_threshold(ptr)
    for f in FILTERS + [Image.BILINEAR]:
        planted = np.stack([np.asarray(Image.fromarray(np.asarray(Image.fromarray(train[r]).resize((16, 16), f)))
                                       .resize((28, 28), Image.BILINEAR)) for r in rows])
        d, idx = descriptor_nn(descriptors(pixel_vectors(planted)), descriptors(ptr))
        assert (d <= thr).all() and (idx == rows).all(), (f, float(d.max()), thr)
    d_other, _ = descriptor_nn(descriptors(pixel_vectors(smooth_images(100, seed=1))), descriptors(ptr))
    assert (d_other <= thr).mean() <= 0.05


def test_select_drops_a_16px_nearest_copy(tmp_path):
    from tailsynth.classify.model import feature_model
    from tailsynth.ood.select import select_candidates

    helpers = _ood_conftest()
    # Images with structure, like lesions (pure pixel noise has none that survives a 16 px round trip).
    counts = {"train": [8, 8, 10, 8, 10, 24, 8], "val": [3, 3, 3, 3, 3, 6, 3]}
    arrays = {}
    for k, (split, per) in enumerate(counts.items()):
        ys = np.concatenate([np.full(n, c) for c, n in enumerate(per)]).astype(np.uint8)
        xs = smooth_images(len(ys), seed=10 + k).astype(np.int16) - 8 * ys[:, None, None, None]
        arrays[f"{split}_images"] = np.clip(xs, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = ys.reshape(-1, 1)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, **arrays)
    x, y, ds = helpers._fit_tiny_classifier(npz, tmp_path / "clf")
    src = x[int(np.flatnonzero(y == ds.classes.index("DF"))[0])]
    rng = np.random.default_rng(9)
    items = [("DF_nearest_copy", "DF", np.asarray(Image.fromarray(src).resize((16, 16), Image.NEAREST)), "")]
    for i in range(8):
        items.append((f"DF_new_{i}", "DF", np.clip(np.array([170, 120, 110]) + rng.normal(0, 8, (16, 16, 3)), 0, 255)
                      .astype(np.uint8), ""))
    helpers._write_candidates(tmp_path / "gen", items)
    select_candidates(tmp_path / "gen", npz, feature_model(tmp_path / "clf"), tmp_path / "out", gamma=0.9)
    with open(tmp_path / "out" / "scores.csv") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert rows["DF_nearest_copy"]["memorized"] == "1" and rows["DF_nearest_copy"]["kept"] == "0"
