"""Arms (g) and (g0) end to end on the tiny set-up: fitted from each fold's arm-(a) model, read like any other arm
by the tables and the decision rule, reproducible, and a screen run never touches the reported part."""

import json

import numpy as np
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.evaluation.decision import decide
from tailsynth.evaluation.feature_arm import FEATURE_ARM_FILE, run_feature_arm
from tailsynth.evaluation.predictions import PREDICTIONS, load_predictions


def test_feature_arms_through_the_experiment(ood_setup, tmp_path):
    _, npz, _ = ood_setup
    out = tmp_path / "exp"
    args = ["experiment-augment", "--data", str(npz), "--out", str(out), "--folds", "2", "--seeds", "0",
            "--arms", "real,features,features-real", "--feature-share", "0.5", "--backbone", "test_resnet",
            "--epochs", "1", "--batch-size", "32", "--threads", "1", "--bootstrap", "50", "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    e = res["parts"]["test"]
    assert set(e["arms"]) == {"real", "features", "features-real"}
    assert e["vs_real"]["features"]["n_replicates"] == 2
    assert "features - features-real" in e["contrasts"]
    v = e["decision"]["features"]
    assert v["control"] == "features-real" and v["verdict"] in ("helps", "hurts", "no detectable effect")
    assert "(g) feature-space" in (out / "table.md").read_text()
    for fold in ("fold0_seed0", "fold1_seed0"):
        g = json.loads((out / "runs" / "features" / fold / FEATURE_ARM_FILE).read_text())
        g0 = json.loads((out / "runs" / "features-real" / fold / FEATURE_ARM_FILE).read_text())
        assert g["share"] == 0.5 and g0["share"] == 0.0
        # r = 0.5: as many synthetic features as real ones (4 views each) per tail class; none for (g0)
        assert g["synthetic_features"] == g["real_features"] and set(g["real_features"]) == {"AK", "DF", "VASC"}
        assert set(g0["synthetic_features"].values()) == {0}
        assert g["l2"] in (1e-4, 1e-3, 1e-2) and set(g["l2_val_balanced_accuracy"]) == {"0.0001", "0.001", "0.01"}
        scores = {float(k): v for k, v in g["l2_val_balanced_accuracy"].items()}
        assert g["l2"] == max(k for k, v in scores.items() if v >= max(scores.values()) - 0.005)  # ties: larger l2
        real = load_predictions(out / "runs" / "real" / fold / PREDICTIONS.format(part="test"))
        feat = load_predictions(out / "runs" / "features" / fold / PREDICTIONS.format(part="test"))
        assert np.array_equal(real["ids"], feat["ids"]) and np.array_equal(real["y"], feat["y"])
        assert np.allclose(feat["probs"].sum(1), 1.0)

    # Reproducible from the same (a) model and seed; a screen run (report=False) writes no reported predictions.
    scorer, manifest = out / "runs" / "real" / "fold0_seed0", out / "splits" / "fold0.csv"
    again = run_feature_arm(scorer, npz, manifest, tmp_path / "again", share=0.5, seed=0, tail=["AK", "DF", "VASC"],
                            log=lambda *a: None)
    first = json.loads((out / "runs" / "features" / "fold0_seed0" / FEATURE_ARM_FILE).read_text())
    assert again["l2_val_balanced_accuracy"] == first["l2_val_balanced_accuracy"]
    a = load_predictions(tmp_path / "again" / PREDICTIONS.format(part="test"))
    b = load_predictions(out / "runs" / "features" / "fold0_seed0" / PREDICTIONS.format(part="test"))
    assert np.allclose(a["probs"], b["probs"])
    screen = run_feature_arm(scorer, npz, manifest, tmp_path / "screen", share=0.25, seed=0, tail=["AK", "DF", "VASC"],
                             report=False, log=lambda *a: None)
    assert screen["reported"] is False and not (tmp_path / "screen" / PREDICTIONS.format(part="test")).exists()

    # tools/keep_experiment.py: what the result rests on survives the run folders (fp16 probabilities).
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from keep_experiment import keep, restore

    kept = keep(out, tmp_path / "kept")
    assert (tmp_path / "kept" / "results.json").is_file() and (tmp_path / "kept" / "records" / "features").is_dir()
    assert len([k for k in kept if k.suffix == ".npz"]) == 6  # 3 arms x 2 folds
    back = restore(tmp_path / "fresh", tmp_path / "kept")
    assert len(back) == 6 and not restore(tmp_path / "fresh", tmp_path / "kept")  # a second restore adds nothing
    r = load_predictions(tmp_path / "fresh" / "runs" / "features" / "fold1_seed0" / PREDICTIONS.format(part="test"))
    o = load_predictions(out / "runs" / "features" / "fold1_seed0" / PREDICTIONS.format(part="test"))
    assert np.array_equal(r["ids"], o["ids"]) and np.allclose(r["probs"], o["probs"], atol=1e-3)


def test_decision_rule_for_g_reads_its_own_control():
    def cmp(lo, hi, p):
        return {"n_replicates": 5, "mcnemar_p_max": p,
                "bootstrap": {"balanced_accuracy": {"delta": (lo + hi) / 2, "ci95": [lo, hi]},
                              "tail_recall": {"delta": 0.0, "ci95": [-0.1, 0.1]}}}

    part = {"vs_real": {"features": cmp(0.01, 0.05, 0.01)},
            "contrasts": {"features - features-real": cmp(0.005, 0.03, 0.04),
                          "features - prior-shift": cmp(-0.05, -0.01, 0.01)}}  # not (g)'s control: ignored
    assert decide(part)["features"]["verdict"] == "helps"
    # The same gain that the head re-fit alone also gives is not a win for feature synthesis.
    part["contrasts"]["features - features-real"] = cmp(-0.01, 0.03, 0.5)
    v = decide(part)["features"]
    assert v["verdict"] == "no detectable effect" and v["beats_control"] is False
    assert "beats_prior_shift_control" not in v


def test_screen_rule_prefers_the_smaller_share_within_the_tie():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from feature_screen import choose

    assert choose({0.25: 0.600, 0.5: 0.604}) == 0.25  # within 0.005: the smaller r
    assert choose({0.25: 0.600, 0.5: 0.606}) == 0.5
    assert choose({0.25: 0.610, 0.5: 0.590}) == 0.25
