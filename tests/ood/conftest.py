"""Tiny real-data classifier and a candidate folder in the generator's format, shared by the CLI tests."""

import csv

import numpy as np
import pytest

RES = 28
BACKBONE = "test_resnet"  # timm's 0.4 M-parameter test net: seconds on a loaded 2-core machine
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


def _make_npz(path, counts, seed=0):
    """MedMNIST layout; each npz label gets its own base colour plus pixel noise (as tests/conftest.make_npz)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per in counts.items():
        ys = np.concatenate([np.full(n, k) for k, n in enumerate(per)]).astype(np.uint8)
        xs = np.stack([np.clip(np.array([200, 150, 140]) - 10 * y + rng.normal(0, 8, (RES, RES, 3)), 0, 255)
                       for y in ys]).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = xs, ys.reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def _fit_tiny_classifier(npz, out):
    import torch

    from tailsynth.classify.model import ClassifierMeta, build_backbone, preprocess, save_classifier
    from tailsynth.data import load_source

    torch.manual_seed(0)
    ds = load_source(npz)
    x, y = ds.split("train").arrays(RES)
    meta = ClassifierMeta(backbone=BACKBONE, classes=ds.classes, resolution=RES)
    model = build_backbone(BACKBONE, len(ds.classes))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    xt, yt = preprocess(x, meta), torch.from_numpy(y)
    model.train()
    for _ in range(15):  # a few steps: features become class-aware, which is all scoring needs
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    save_classifier(model, out, backbone=BACKBONE, classes=ds.classes, resolution=RES)
    return x, y, ds


def _write_candidates(gen, items):
    """items: (id, class, uint8 image, background_id)."""
    from PIL import Image

    (gen / "images").mkdir(parents=True)
    with open(gen / "manifest.csv", "w", newline="") as f, open(gen / "synthetic_ground_truth.csv", "w", newline="") as g:
        w, wg = csv.writer(f), csv.writer(g)
        w.writerow(["id", "class", "background_id", "mask_source", "seed"])
        wg.writerow(["image", *CLASSES, "SCC", "UNK"])
        for iid, cls, img, bg in items:
            Image.fromarray(img).save(gen / "images" / f"{iid}.png")
            w.writerow([iid, cls, bg, "ellipse", 0])
            wg.writerow([iid, *["1.0" if c == cls else "0.0" for c in CLASSES], "0.0", "0.0"])


@pytest.fixture(scope="module")
def ood_setup(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sel")
    npz = _make_npz(root / "tiny.npz", {"train": [8, 8, 10, 8, 10, 24, 8], "val": [3, 3, 3, 3, 3, 6, 3]})
    x, y, ds = _fit_tiny_classifier(npz, root / "clf")
    rng = np.random.default_rng(5)
    items = []
    df, vasc = ds.classes.index("DF"), ds.classes.index("VASC")
    npz_label = {"DF": 3, "VASC": 6}  # make_npz colours images by npz label index
    for cls in ("DF", "VASC"):
        base = np.array([200, 150, 140]) - 10 * npz_label[cls]
        for i in range(6):  # drawn like the real images of the class: in-distribution
            img = np.clip(base + rng.normal(0, 8, (RES, RES, 3)), 0, 255).astype(np.uint8)
            items.append((f"{cls}_in_{i}", cls, img, ""))
        for i in range(6):  # saturated green noise: nothing like any real image
            img = np.clip(np.array([20, 230, 30]) + rng.normal(0, 40, (RES, RES, 3)), 0, 255).astype(np.uint8)
            items.append((f"{cls}_out_{i}", cls, img, ""))
    train_ids = [r.image_id for r in ds.split("train").records]
    copy_row = int(np.flatnonzero(y == df)[0])
    items.append(("DF_copy", "DF", x[copy_row], ""))
    # An exact copy of its own inpainting background is not memorization (checked on VASC).
    bg_row = int(np.flatnonzero(y == vasc)[0])
    items.append(("VASC_bgcopy", "VASC", x[bg_row], train_ids[bg_row]))
    gen = root / "gen"
    _write_candidates(gen, items)
    return root, npz, gen
