"""The decision rules of the HAM10000 baseline protocol (amendment 1), as tools/ham_baseline.py applies them."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import ham_baseline as hb  # noqa: E402


def _rows(scores: dict, walls: dict) -> list[dict]:
    rows = []
    for (cfg, fold), bma in scores.items():
        bb = "tf_efficientnet_lite0" if cfg.startswith("lite0") else "resnet18"
        rows.append({"stage": "1", "config": cfg, "backbone": bb, "epochs": 12 if cfg.endswith("e12") else 6,
                     "method": hb.REFERENCE, "fold": fold, "balanced_accuracy": bma, "run_wall_s": walls[bb]})
    return rows


def _full(lite6, lite12, r6, r12):
    return {("lite0-imagenet-e6", 0): lite6, ("lite0-imagenet-e6", 1): lite6,
            ("lite0-imagenet-e12", 0): lite12, ("lite0-imagenet-e12", 1): lite12,
            ("resnet18-scratch-e6", 0): r6, ("resnet18-scratch-e6", 1): r6,
            ("resnet18-scratch-e12", 0): r12, ("resnet18-scratch-e12", 1): r12}


def test_stage1_waits_for_every_run():
    scores = _full(0.6, 0.62, 0.58, 0.6)
    del scores[("resnet18-scratch-e12", 1)]
    assert hb.stage1_decision(_rows(scores, {"tf_efficientnet_lite0": 150, "resnet18": 120})) is None


def test_stage1_backbone_and_length():
    walls = {"tf_efficientnet_lite0": 150, "resnet18": 120}
    d = hb.stage1_decision(_rows(_full(0.60, 0.625, 0.58, 0.59), walls))
    assert d["backbone"] == "tf_efficientnet_lite0" and d["pretrained"] == "imagenet" and d["epochs"] == 12
    d = hb.stage1_decision(_rows(_full(0.60, 0.605, 0.58, 0.59), walls))
    assert d["epochs"] == 6  # 12 epochs gain only 0.005
    # within 0.01: the cheaper backbone wins
    d = hb.stage1_decision(_rows(_full(0.60, 0.60, 0.595, 0.59), walls))
    assert d["backbone"] == "resnet18" and d["pretrained"] is None and "cheaper" in d["why"]


def test_stage2_tie_break_prefers_no_retraining():
    def arms(**bma):
        return {m: {"balanced_accuracy": {"mean": v}} for m, v in bma.items()}

    w = hb.stage2_winner(arms(**{"ce+crt": 0.640, "balanced-softmax": 0.637, hb.REFERENCE: 0.62}))
    assert w["winner"] == "balanced-softmax"
    w = hb.stage2_winner(arms(**{"ce+crt": 0.650, "balanced-softmax": 0.637, hb.REFERENCE: 0.62}))
    assert w["winner"] == "ce+crt"
    w = hb.stage2_winner(arms(**{"ce-drw": 0.66, "ce+crt": 0.659}))
    assert w["winner"] == "ce-drw"


def test_predictions_are_kept_small_and_restored(tmp_path):
    from tailsynth.evaluation.predictions import PREDICTIONS, load_predictions

    run = tmp_path / "out" / "runs" / hb.REFERENCE / "fold0_seed0"
    run.mkdir(parents=True)
    probs = np.random.default_rng(0).dirichlet(np.ones(7), 50).astype(np.float32)
    np.savez(run / PREDICTIONS.format(part="test"), ids=np.arange(50).astype(str), y=np.arange(50) % 7, probs=probs,
             classes=np.array(hb.CLASSES), posthoc_tau=np.float64(0), dropped="{}")
    kept = hb.keep_predictions(tmp_path / "res", tmp_path / "out", "1", "c", hb.REFERENCE, 0)
    (run / PREDICTIONS.format(part="test")).unlink()
    assert hb.restore_predictions(tmp_path / "res", tmp_path / "out", "1", "c", hb.REFERENCE, 0)
    back = load_predictions(run / PREDICTIONS.format(part="test"))
    assert kept.stat().st_size < 10_000
    assert (back["probs"].argmax(1) == probs.argmax(1)).all() and np.abs(back["probs"] - probs).max() < 1e-3
