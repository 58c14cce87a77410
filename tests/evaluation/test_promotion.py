"""The export rule: which arm a run serves and the reason the report gives."""

import json

import pytest

from tailsynth.data.errors import DataError
from tailsynth.evaluation.promotion import NO_SYNTHETIC_MARGIN, REAL, SYNTHETIC, decide_serving


def _results(tmp_path, verdict=None):
    decision = {} if verdict is None else {"ood": {"verdict": verdict, "delta_balanced_accuracy_vs_a":
                                                   {"delta": 0.02, "ci95": [0.005, 0.035]}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"parts": {"test": {"decision": {"features": {"verdict": "helps"}, **decision}}}}))
    return path


def test_nothing_kept_serves_real_only_whatever_the_rule():
    for evidence in ("", "ignored"):
        d = decide_serving(kept=0, delta=0.5, split="val", evidence=evidence)
        assert d["served"] == REAL and d["margin"] == NO_SYNTHETIC_MARGIN and "kept no synthetic image" in d["reason"]


def test_single_split_rule_serves_when_not_below():
    assert decide_serving(kept=10, delta=0.0, split="val")["served"] == SYNTHETIC
    d = decide_serving(kept=10, delta=-0.01, split="val")
    assert d["served"] == REAL and d["margin"] < 0 and "-0.010" in d["reason"] and "val split" in d["reason"]


def test_evidence_rule_follows_the_experiments_verdict_not_the_split(tmp_path):
    helps = decide_serving(kept=10, delta=-0.02, split="val", evidence=str(_results(tmp_path, "helps")))
    assert helps["served"] == SYNTHETIC and helps["margin"] >= 0 and "[+0.005, +0.035]" in helps["reason"]
    null = decide_serving(kept=10, delta=0.05, split="val", evidence=str(_results(tmp_path, "no detectable effect")))
    assert null["served"] == REAL and null["margin"] < 0 and "'no detectable effect'" in null["reason"]
    # The experiment decided only other arms (here (g)): no verdict for (e) yet, so real-only.
    pending = decide_serving(kept=10, delta=0.05, split="val", evidence=str(_results(tmp_path)))
    assert pending["served"] == REAL and "no verdict for the synthetic arm yet" in pending["reason"]


def test_missing_or_foreign_evidence_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.json: no experiment results there"):
        decide_serving(kept=1, delta=0.0, split="val", evidence=str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="bad.json: not an experiment-augment results file"):
        decide_serving(kept=1, delta=0.0, split="val", evidence=str(bad))


def test_evidence_may_name_the_experiment_folder(tmp_path):
    # A profile names the experiment's folder; the rule reads the results record inside it.
    _results(tmp_path, "helps")
    assert decide_serving(kept=10, delta=-0.02, split="val", evidence=str(tmp_path))["served"] == SYNTHETIC
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no experiment results there"):
        decide_serving(kept=1, delta=0.0, split="val", evidence=str(empty))
