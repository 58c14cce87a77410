"""The real-vs-augmented experiment: interval maths, and one tiny end-to-end pass through all four arms."""

import json
import math

import pytest

from tailsynth.ood.experiment import run_augmentation_experiment, summarize


def test_summarize_t_interval_by_hand():
    s = summarize([0.5, 0.6, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, df=2)
    assert s["ci95"] == pytest.approx([0.6 - half, 0.6 + half])
    assert summarize([None])["n"] == 0


def test_experiment_end_to_end_tiny(ood_setup, tmp_path):
    root, npz, gen = ood_setup
    res = run_augmentation_experiment(npz, gen, tmp_path / "exp", seeds=[0], gammas=[0.5], main_gamma=0.5,
                                      backbone="test_resnet", epochs=1, classifier=root / "clf", quiet=True,
                                      train_kw={"batch_size": 64, "threads": 1})
    rows = res["table"]["rows"]
    assert set(rows) == {"real", "random@0.5", "ood@0.5", "oversample@0.5"}
    for r in rows.values():
        assert 0.0 <= r["balanced_accuracy"]["mean"] <= 1.0
        assert set(r["per_class_recall"]) == {"MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"}
    # Matched counts: the synthetic arms and the oversampling control all add 7 DF and 7 VASC images.
    for arm in ("ood", "random", "oversample"):
        cfg = (tmp_path / "exp" / "runs" / f"{arm}_g0p50" / "seed0" / "config.yaml").read_text()
        assert "n_train_synthetic: 14" in cfg, arm
    man = (tmp_path / "exp" / "oversample" / "manifest.csv").read_text().splitlines()
    assert len(man) == 15 and all(",DF" in l or ",VASC" in l for l in man[1:])
    assert "| (a) real only |" in res["markdown"]
    # A second call reuses the finished runs instead of training again.
    before = (tmp_path / "exp" / "runs" / "real" / "seed0" / "metrics.json").stat().st_mtime
    run_augmentation_experiment(npz, gen, tmp_path / "exp", seeds=[0], gammas=[0.5], main_gamma=0.5, epochs=1,
                                backbone="test_resnet",
                                classifier=root / "clf", quiet=True, train_kw={"batch_size": 64, "threads": 1})
    assert (tmp_path / "exp" / "runs" / "real" / "seed0" / "metrics.json").stat().st_mtime == before
    assert json.loads((tmp_path / "exp" / "results.json").read_text())["main_gamma"] == 0.5


def test_rate_intervals_are_clipped_to_0_1():
    s = summarize([0.0, 0.0, 0.25], bounds=(0.0, 1.0))
    assert s["ci95"][0] == 0.0 and s["ci95"][1] < 1.0
