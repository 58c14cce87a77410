"""`tailsynth select` end to end on tiny data: a tiny real-data classifier, a candidate folder in the
generator's format (in-distribution, off-distribution, and an exact copy of a training image)."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tailsynth.cli import app

RES = 28
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


def _fit_tiny_classifier(npz, out):
    import torch

    from tailsynth.classify.model import build_backbone, preprocess, save_classifier
    from tailsynth.data import load_source

    torch.manual_seed(0)
    ds = load_source(npz)
    x, y = ds.split("train").arrays(RES)
    meta = {"mean": [0.5] * 3, "std": [0.5] * 3}
    model = build_backbone("resnet18", len(ds.classes))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    xt, yt = preprocess(x, meta), torch.from_numpy(y)
    model.train()
    for _ in range(15):  # a few steps: features become class-aware, which is all scoring needs
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    save_classifier(model, out, backbone="resnet18", classes=ds.classes, resolution=RES)
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
def setup(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from conftest import make_npz

    root = tmp_path_factory.mktemp("sel")
    npz = make_npz(root / "tiny.npz", {"train": [8, 8, 10, 8, 10, 24, 8], "val": [3, 3, 3, 3, 3, 6, 3]})
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


def test_select_cli_writes_the_interface_files(setup):
    root, npz, gen = setup
    out = root / "out_gamma"
    r = CliRunner().invoke(app, ["select", "--candidates", str(gen), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--gamma", "0.5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == ["id", "class", "mahalanobis", "energy", "knn", "p_intended", "memorized", "kept"]
    by_id = {row["id"]: row for row in rows}
    assert len(rows) == 26
    # The exact copy of a training image is memorized and never kept; the own-background copy is not memorized.
    assert by_id["DF_copy"]["memorized"] == "1" and by_id["DF_copy"]["kept"] == "0"
    assert by_id["VASC_bgcopy"]["memorized"] == "0"
    # Quota: round(0.5 * 13) = 7 (round half up) per class, and the green noise is never preferred to in-distribution.
    for cls in ("DF", "VASC"):
        kept = [row["id"] for row in rows if row["class"] == cls and row["kept"] == "1"]
        assert len(kept) == 7
        assert sum("_in_" in k for k in kept) == 6, kept
    with open(out / "selected_manifest.csv") as f:
        man = list(csv.DictReader(f))
    assert list(man[0].keys()) == ["path", "class"] and len(man) == 14
    assert all((gen / "images").joinpath(m["path"].rsplit("/", 1)[-1]).is_file() for m in man)
    q = json.loads((out / "quality.json").read_text())
    for cls in ("DF", "VASC"):
        e = q["per_class"][cls]
        for key in ("acceptance_rate", "fd", "kid", "precision", "recall", "memorization_rate"):
            assert key in e
        assert e["acceptance_rate"] == pytest.approx(7 / 13)
    assert q["per_class"]["DF"]["memorization_rate"] == pytest.approx(1 / 13)
    assert "Inception" in q["note"]
    html = (out / "report.html").read_text()
    assert "hist_DF.png" in html and (out / "report_files" / "grid_DF_accepted.png").is_file()


def test_select_cli_calibrated_with_weights(setup):
    root, npz, gen = setup
    out = root / "out_cal"
    r = CliRunner().invoke(app, ["select", "--candidates", str(gen), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--calibrate", "0.95", "--weights", "typicality", "--no-report",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    with open(out / "selected_manifest.csv") as f:
        man = list(csv.DictReader(f))
    assert list(man[0].keys()) == ["path", "class", "weight"]
    assert all(0.05 <= float(m["weight"]) <= 1.0 for m in man)
    assert not any("_out_" in m["path"] for m in man)


def test_select_cli_bad_input_names_the_problem(setup, tmp_path):
    root, npz, gen = setup
    r = CliRunner().invoke(app, ["select", "--candidates", str(tmp_path / "nope"), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--gamma", "0.5", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "candidate folder not found" in r.output
    r = CliRunner().invoke(app, ["select", "--candidates", str(gen), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--gamma", "0.5", "--calibrate", "0.9", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "exactly one" in r.output
