"""Training on tiny data: one epoch writes a loadable model folder; resume replays the uninterrupted run."""

import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from tailsynth.classify.model import load_classifier, predict_arrays
from tailsynth.classify.train import train_classifier
from tailsynth.data.errors import DataError

FAST = dict(backbone="test_resnet", threads=1, batch_size=16, quiet=True, write_reports=False)


def test_one_epoch_writes_model_folder(tiny_npz, tmp_path):
    out = tmp_path / "m"
    m = train_classifier(tiny_npz, out, backbone="test_resnet", loss="ce", epochs=1, seed=0, threads=1, batch_size=16,
                         quiet=True)
    for f in ("model.pt", "metrics.json", "config.yaml", "checkpoint.pt", "history.json", "per_class.csv",
              "metrics.md", "confusion_matrix.png", "per_class_recall.png"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["split"] == "val" and saved["n"] == 15
    for k in ("balanced_accuracy", "accuracy", "macro_auc", "ece"):
        assert k in saved
    assert set(saved["per_class"]) == {"MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"}
    assert saved["per_class"]["DF"]["support"] == 1
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["selected_epoch"] == 1 and cfg["resolution"] == 28 and cfg["loss"] == "ce"
    # The folder is what serving/OOD code loads; its predictions reproduce the written metrics.
    net, meta = load_classifier(out)
    assert meta.train_class_counts["NV"] == 20
    assert meta.classes == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
    from tailsynth.data import load_source

    x, y = load_source(tiny_npz).split("val").arrays(28)
    probs, feats, _ = predict_arrays(net, meta, x, features=True)
    assert probs.shape == (15, 7) and feats.shape[0] == 15
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert float((probs.argmax(1) == y).mean()) == pytest.approx(m["accuracy"])


def test_resume_gives_the_same_next_step_loss(tiny_npz, tmp_path):
    kw = dict(loss="focal", sampler="sqrt", epochs=3, seed=3, **FAST)
    full = train_classifier(tiny_npz, tmp_path / "full", **kw)
    part = train_classifier(tiny_npz, tmp_path / "part", stop_after=1, **kw)
    assert part["stopped_after"] == 1 and not (tmp_path / "part" / "model.pt").exists()
    resumed = train_classifier(tiny_npz, tmp_path / "part", resume=True, **kw)
    h_full = json.loads((tmp_path / "full" / "history.json").read_text())
    h_res = json.loads((tmp_path / "part" / "history.json").read_text())
    assert len(h_res) == 3
    # The first step after the interruption sees the same weights, optimiser state, batch and augmentation.
    assert h_res[1]["first_step_loss"] == pytest.approx(h_full[1]["first_step_loss"], rel=1e-5)
    assert h_res[2]["loss"] == pytest.approx(h_full[2]["loss"], rel=1e-4)
    assert resumed["balanced_accuracy"] == pytest.approx(full["balanced_accuracy"])
    # ...and it differs from what a fresh run with another seed sees (the comparison can fail).
    train_classifier(tiny_npz, tmp_path / "other", **{**kw, "seed": 4, "epochs": 3}, stop_after=2)
    h_other = json.loads((tmp_path / "other" / "history.json").read_text())
    assert h_other[1]["first_step_loss"] != pytest.approx(h_full[1]["first_step_loss"], rel=1e-5)


def test_resume_refuses_a_changed_config(tiny_npz, tmp_path):
    train_classifier(tiny_npz, tmp_path / "r", epochs=2, stop_after=1, **FAST)
    with pytest.raises(ValueError, match="cannot resume, loss="):
        train_classifier(tiny_npz, tmp_path / "r", epochs=2, loss="focal", resume=True, **FAST)


def _synthetic(tmp_path, rows):
    d = tmp_path / "syn"
    (d / "images").mkdir(parents=True)
    with open(d / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "weight"])
        for i, (cls, wt) in enumerate(rows):
            Image.fromarray(np.full((32, 32, 3), 40 * i % 255, np.uint8)).save(d / "images" / f"{i}.png")
            w.writerow([f"images/{i}.png", cls, wt])
    return d / "manifest.csv"


def test_synthetic_manifest_is_mixed_in(tiny_npz, tmp_path):
    man = _synthetic(tmp_path, [("DF", 0.5), ("DF", ""), ("VASC", 2.0), ("AK", 1.0)])
    train_classifier(tiny_npz, tmp_path / "s", epochs=1, synthetic_manifest=man, synthetic_ratio=0.5,
                     synthetic_weight=0.25, **FAST)
    cfg = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert cfg["n_train_synthetic"] == 4 and cfg["n_train_real"] == 54 and cfg["synthetic_weight"] == 0.25
    # Class totals are the pooled counts (DF 3 real + 2 synthetic, VASC 3 + 1, AK 6 + 1); half of each of those
    # classes' draws are synthetic: DF 2 of 5 (2.5 rounds to even), VASC 2 of 4, AK 4 of 7 (3.5 rounds to even).
    assert cfg["loss_class_counts"]["DF"] == 5 and cfg["loss_class_counts"]["AK"] == 7
    assert cfg["synthetic_draws_per_epoch"] == 8
    assert cfg["steps_per_epoch"] == 4  # 58 draws: 3 batches of 16 and one of 10
    with pytest.raises(ValueError, match="synthetic_weight must be"):
        train_classifier(tiny_npz, tmp_path / "w", epochs=1, synthetic_manifest=man, synthetic_weight=-1, **FAST)


def test_prior_shift_control_trains_on_real_images_only(tiny_npz, tmp_path):
    man = _synthetic(tmp_path, [("DF", 1.0)] * 6)
    train_classifier(tiny_npz, tmp_path / "c", epochs=1, synthetic_manifest=man, synthetic_ratio=0.0, **FAST)
    cfg = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())
    assert cfg["synthetic_draws_per_epoch"] == 0 and cfg["loss_class_counts"]["DF"] == 9  # 3 real DF, 9 draws


def test_synthetic_manifest_errors_name_the_row(tiny_npz, tmp_path):
    man = _synthetic(tmp_path, [("DF", 1.0), ("SCC", 1.0)])
    with pytest.raises(DataError, match=r"manifest.csv: row 3: class 'SCC'"):
        train_classifier(tiny_npz, tmp_path / "e", epochs=1, synthetic_manifest=man, **FAST)
    man.write_text("path,label\nx.png,DF\n")
    with pytest.raises(DataError, match="missing column 'class'"):
        train_classifier(tiny_npz, tmp_path / "e", epochs=1, synthetic_manifest=man, **FAST)


def test_isic_folder_gets_grouped_splits(tiny_isic, tmp_path):
    m = train_classifier(tiny_isic, tmp_path / "i", epochs=1, resolution=32, **FAST)
    cfg = yaml.safe_load((tmp_path / "i" / "config.yaml").read_text())
    assert cfg["resolution"] == 32 and "SCC" in cfg["classes"]
    assert m["n"] == cfg["n_val"] > 0


def test_bad_options_are_clear_errors(tiny_npz, tmp_path):
    with pytest.raises(ValueError, match="unknown loss"):
        train_classifier(tiny_npz, tmp_path / "x", loss="nope", **FAST)
    with pytest.raises(ValueError, match="unknown sampler"):
        train_classifier(tiny_npz, tmp_path / "x", sampler="nope", **FAST)
    with pytest.raises(ValueError, match="unknown option"):
        train_classifier(tiny_npz, tmp_path / "x", epochz=3, **FAST)
    with pytest.raises(DataError, match="not found"):
        train_classifier(tmp_path / "missing.npz", tmp_path / "x", **FAST)
