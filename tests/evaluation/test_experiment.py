"""The augmentation experiment: replicate splits, the decision rule, and one tiny end-to-end pass through all arms."""

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.evaluation.decision import decide
from tailsynth.evaluation.replicates import make_replicates
from tailsynth.evaluation.stats import summarize


def test_summarize_t_interval_by_hand():
    s = summarize([0.5, 0.6, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, df=2)
    assert s["ci95"] == pytest.approx([0.6 - half, 0.6 + half])
    assert summarize([None])["n"] == 0
    clipped = summarize([0.0, 0.0, 0.25], bounds=(0.0, 1.0))
    assert clipped["ci95"][0] == 0.0 and clipped["ci95"][1] < 1.0


def _manifest(path):
    with open(path) as f:
        return {r["image_id"]: r["split"] for r in csv.DictReader(f)}


def test_folds_report_every_image_once_and_pick_epochs_elsewhere(ood_setup, tmp_path):
    _, npz, _ = ood_setup
    reps = make_replicates(npz, tmp_path, folds=3, seeds=[0, 1])
    assert [r.tag for r in reps] == ["fold0_seed0", "fold0_seed1", "fold1_seed0", "fold1_seed1", "fold2_seed0",
                                     "fold2_seed1"]
    tests = [{i for i, s in _manifest(tmp_path / "splits" / f"fold{k}.csv").items() if s == "test"} for k in range(3)]
    assert sum(len(t) for t in tests) == 100 and len(set().union(*tests)) == 100  # each image reported once
    for k in range(3):
        m = _manifest(tmp_path / "splits" / f"fold{k}.csv")
        assert set(m.values()) == {"train", "val", "test"}
        assert {i for i, s in m.items() if s == "val"}.isdisjoint(tests[k])  # the epoch is never picked on it
    plain = make_replicates(npz, tmp_path / "plain", folds=None, seeds=[3])
    m = _manifest(plain[0].manifest)
    assert sum(s == "test" for s in m.values()) == 24 and all(i.startswith("val_") for i, s in m.items() if s == "test")
    assert all(i.startswith("train_") for i, s in m.items() if s == "val")


def _cmp(lo, hi, p, tail_lo=-0.1):
    return {"n_replicates": 5, "mcnemar_p_max": p,
            "bootstrap": {"balanced_accuracy": {"delta": (lo + hi) / 2, "ci95": [lo, hi]},
                          "tail_recall": {"delta": 0.0, "ci95": [tail_lo, 0.1]}}}


def test_decision_rule():
    part = {"vs_real": {"ood": _cmp(0.01, 0.05, 0.01, tail_lo=0.02)},
            "contrasts": {"ood - prior-shift": _cmp(0.005, 0.03, 0.04), "ood - cmo": _cmp(-0.01, 0.02, 0.5)}}
    v = decide(part)["ood"]
    assert v["verdict"] == "helps" and v["beats_prior_shift_control"] and not v["beats_cmo"] and v["tail_recall_gain"]
    # The same gain without beating the prior-shift control is a class-prior effect, not a win for synthesis.
    part["contrasts"]["ood - prior-shift"] = _cmp(-0.01, 0.03, 0.4)
    assert decide(part)["ood"]["verdict"] == "no detectable effect"
    part["vs_real"]["ood"] = _cmp(-0.05, -0.01, 0.01)
    assert decide(part)["ood"]["verdict"] == "hurts"
    part["vs_real"]["ood"] = _cmp(0.01, 0.05, 0.2)  # interval above 0 but McNemar not significant
    part["contrasts"]["ood - prior-shift"] = _cmp(0.01, 0.03, 0.01)
    assert decide(part)["ood"]["verdict"] == "no detectable effect"


def _background_of(gen, cid):
    with open(gen / "manifest.csv") as f:
        return next(r["background_id"] for r in csv.DictReader(f) if r["id"] == cid)


def test_experiment_folds_end_to_end_tiny(ood_setup, tmp_path):
    from tailsynth_testdata import make_npz

    _, npz, gen = ood_setup
    eval_npz = make_npz(tmp_path / "eval.npz", {"test": [3, 3, 3, 3, 3, 6, 3]}, seed=7)  # a source never trained on
    out = tmp_path / "exp"
    args = ["experiment-augment", "--data", str(npz), "--candidates", str(gen), "--harmonized-candidates", str(gen),
            "--out", str(out), "--folds", "2", "--seeds", "0", "--gamma", "0.5", "--backbone", "test_resnet",
            "--epochs", "1", "--batch-size", "32", "--threads", "1", "--bootstrap", "50", "--baseline", "ce+posthoc",
            "--synthetic-ratio", "0.5", "--synthetic-weight", "0.5", "--eval-data", str(eval_npz),
            "--eval-split", "test", "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    from tailsynth.runinfo import read_run

    assert read_run(out)["stages"]["experiment-augment"]["params"]["folds"] == 2  # run.yaml beside the results
    arms = {"real", "cmo", "prior-shift", "random", "ood", "harmonized"}
    for part, n_images in (("test", 100), ("eval", 24)):
        e = res["parts"][part]
        assert set(e["arms"]) == arms
        for k, t in e["arms"].items():
            assert t["balanced_accuracy"]["n"] == 2 and 0 <= t["balanced_accuracy"]["mean"] <= 1, (part, k)
            assert set(t["per_class_recall"]) == {"MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"}
        for k in arms - {"real"}:
            c = e["vs_real"][k]
            assert c["n_replicates"] == 2 and 0 <= c["mcnemar_p_max"] <= 1
            lo, hi = c["bootstrap"]["balanced_accuracy"]["ci95"]
            assert lo <= c["bootstrap"]["balanced_accuracy"]["delta"] <= hi
            total = sum(t["n"] for t in c["mcnemar"].values())
            assert total == (n_images if part == "test" else 2 * n_images)  # folds concatenated; eval per model
        assert {"ood - prior-shift", "ood - random", "ood - cmo", "harmonized - ood"} <= set(e["contrasts"])
        assert e["decision"]["ood"]["verdict"] in ("helps", "hurts", "no detectable effect")
    # Matched counts: (d) and (c) follow (e)'s selection; (c) draws only real images with (e)'s class totals.
    import yaml

    for fold in ("fold0", "fold1"):
        runs = out / "runs"
        cfg = {k: yaml.safe_load((runs / k / f"{fold}_seed0" / "config.yaml").read_text())
               for k in ("real", "ood", "random", "prior-shift", "cmo")}
        # 7 of 13 per class, less VASC_bgcopy where its background is reported (below) and DF_copy where the image
        # it copies is reported (a near-copy of a reported image)
        assert cfg["ood"]["n_train_synthetic"] == cfg["random"]["n_train_synthetic"] in (12, 13, 14)
        assert cfg["ood"]["synthetic_ratio"] == 0.5 and cfg["ood"]["synthetic_weight"] == 0.5
        assert cfg["prior-shift"]["synthetic_draws_per_epoch"] == 0
        assert cfg["prior-shift"]["loss_class_counts"] == cfg["ood"]["loss_class_counts"]
        assert cfg["real"]["n_train_synthetic"] == 0 and cfg["cmo"]["cmo"]["enabled"]
        assert cfg["real"]["loss"] == "ce" and cfg["real"]["splits"].endswith(f"splits/{fold}.csv")
        with np.load(runs / "real" / f"{fold}_seed0" / "predictions_test.npz") as z:
            assert 0 <= float(z["posthoc_tau"]) <= 2  # tuned on the inner val split
    # VASC_bgcopy was painted on a real training image: in the fold that reports that image it is never used.
    bg_fold = [f for f in ("fold0", "fold1")
               if _manifest(out / "splits" / f"{f}.csv").get(_background_of(gen, "VASC_bgcopy")) == "test"]
    assert len(bg_fold) == 1
    for arm in ("ood", "random"):
        man = (out / "selection" / f"{bg_fold[0]}_seed0" / f"{arm}_g0p50.csv").read_text()
        assert "VASC_bgcopy" not in man
    kept = json.loads((out / "selection" / "kept_counts.json").read_text())
    assert kept[f"{bg_fold[0]}_seed0"]["ood excluded (background or source reported)"] == 1
    assert "| (e) OOD-selected synthetic |" in (out / "table.md").read_text()
    # A second call trains nothing and tabulates the same runs.
    before = (out / "runs" / "ood" / "fold0_seed0" / "metrics.json").stat().st_mtime
    r = CliRunner().invoke(app, [*args, "--collect-only"])
    assert r.exit_code == 0, r.output
    assert (out / "runs" / "ood" / "fold0_seed0" / "metrics.json").stat().st_mtime == before


def test_bad_arms_and_missing_candidates_are_clear_errors(ood_setup, tmp_path):
    _, npz, _ = ood_setup
    r = CliRunner().invoke(app, ["experiment-augment", "--data", str(npz), "--out", str(tmp_path / "x"),
                                 "--arms", "real,ood"])
    assert r.exit_code != 0 and "need --candidates" in r.output
    r = CliRunner().invoke(app, ["experiment-augment", "--data", str(npz), "--out", str(tmp_path / "x"),
                                 "--arms", "real,magic"])
    assert r.exit_code != 0 and "unknown arm" in r.output
    r = CliRunner().invoke(app, ["experiment-augment", "--data", str(npz), "--out", str(tmp_path / "x"),
                                 "--arms", "real", "--baseline", "nope"])
    assert r.exit_code != 0 and "unknown baseline" in r.output


def test_method_comparison_on_the_same_protocol(ood_setup, tmp_path):
    _, npz, _ = ood_setup
    out = tmp_path / "cmp"
    r = CliRunner().invoke(app, ["experiment", "--data", str(npz), "--out", str(out), "--folds", "2", "--seeds", "0",
                                 "--methods", "class-balanced-sampler,ce+posthoc", "--backbone", "test_resnet",
                                 "--epochs", "1", "--batch-size", "32", "--threads", "1", "--bootstrap", "20",
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    e = res["parts"]["test"]
    assert set(e["arms"]) == {"class-balanced-sampler", "ce+posthoc"} and set(e["vs_real"]) == {"ce+posthoc"}
    assert res["best"] in e["arms"] and "decision" not in e
    n = 0
    for fold in ("fold0", "fold1"):
        with np.load(out / "runs" / "ce+posthoc" / f"{fold}_seed0" / "predictions_test.npz") as z:
            n += len(z["y"])
            assert 0 <= float(z["posthoc_tau"]) <= 2
    assert n == 100  # every image reported once
    assert "Best by mean balanced accuracy" in (out / "comparison.md").read_text()


def test_additive_dose_with_cleaning_and_its_replay_control(ood_setup, tmp_path):
    import yaml

    _, npz, gen = ood_setup
    out = tmp_path / "exp_add"
    args = ["experiment-augment", "--data", str(npz), "--candidates", str(gen), "--out", str(out), "--folds", "2",
            "--seeds", "0", "--arms", "real,prior-shift,random,ood", "--backbone", "test_resnet", "--epochs", "1",
            "--batch-size", "32", "--threads", "1", "--bootstrap", "20", "--baseline", "ce",
            "--synthetic-dose", "add", "--synthetic-ratio", "0.25", "--synthetic-weight", "0.3",
            "--clean", "--clean-band", "0,2", "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    from tailsynth.data import load_source

    train = load_source(npz).split("train")
    copied = next(r.image_id for r in train.records if r.label == "DF")  # the fixture's DF_copy copies it
    for fold in ("fold0", "fold1"):
        cfg = {k: yaml.safe_load((out / "runs" / k / f"{fold}_seed0" / "config.yaml").read_text())
               for k in ("real", "ood", "random", "prior-shift")}
        assert cfg["ood"]["synthetic_dose"] == "add" and cfg["prior-shift"]["synthetic_dose"] == "replay"
        assert cfg["ood"]["synthetic_weight"] == 0.3
        # added: the real part of the epoch is (a)'s, synthetic draws on top; replay has the same totals, all real
        real_counts = cfg["real"]["loss_class_counts"]
        ood_counts = cfg["ood"]["loss_class_counts"]
        assert sum(ood_counts.values()) == sum(real_counts.values()) + cfg["ood"]["synthetic_draws_per_epoch"]
        assert cfg["ood"]["synthetic_draws_per_epoch"] > 0
        assert cfg["prior-shift"]["synthetic_draws_per_epoch"] == 0
        assert cfg["prior-shift"]["loss_class_counts"] == ood_counts
        assert cfg["random"]["n_train_synthetic"] == cfg["ood"]["n_train_synthetic"]
        man = (out / "selection" / f"{fold}_seed0" / "ood_g0p40.csv").read_text()
        assert "_out_" not in man  # cleaning dropped the off-class noise
        # the copy of a real image is never used: memorized where it is a training image, excluded where reported
        assert "DF_copy" not in man
        if _manifest(out / "splits" / f"{fold}.csv").get(copied) == "test":
            kept = json.loads((out / "selection" / "kept_counts.json").read_text())[f"{fold}_seed0"]
            assert kept["ood excluded (near-copy of a reported image)"] >= 1
