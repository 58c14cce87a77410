"""The rule of arm (e)'s screen (tools/augment_screen.py), written before the run: best mean inner-split BMA; within
0.005 the smaller r, then the smaller w, then the default confidence."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from augment_screen import choose, write  # noqa: E402


def test_the_rule_breaks_ties_by_share_then_weight_then_default_confidence():
    assert choose({(0.25, 0.3, 0.8): 0.600, (0.5, 0.3, 0.8): 0.606}) == {"share": 0.5, "weight": 0.3, "confidence": 0.8}
    assert choose({(0.25, 1.0, 0.8): 0.601, (0.5, 0.3, 0.8): 0.604}) == {"share": 0.25, "weight": 1.0, "confidence": 0.8}
    assert choose({(0.25, 1.0, 0.5): 0.604, (0.25, 0.3, 0.5): 0.600}) == {"share": 0.25, "weight": 0.3,
                                                                        "confidence": 0.5}
    assert choose({(0.25, 0.3, 0.5): 0.600, (0.25, 0.3, 0.8): 0.600})["confidence"] == 0.8


def test_the_table_averages_both_folds_and_records_the_choice(tmp_path):
    rows = [{"fold": f, "share": r, "weight": 0.3, "confidence": 0.8, "kept": {"DF": 10}, "inner_bma": b}
            for f, r, b in ((0, 0.25, 0.60), (1, 0.25, 0.62), (0, 0.5, 0.64), (1, 0.5, 0.64))]
    out = write(tmp_path, rows, 12.0)
    assert out["mean_inner_bma"] == {"e_r0.25_w0.3_c0.8": 0.61, "e_r0.5_w0.3_c0.8": 0.64}
    assert out["choice"] == {"share": 0.5, "weight": 0.3, "confidence": 0.8}
    assert json.loads((tmp_path / "augment_screen.json").read_text())["choice"]["share"] == 0.5
    assert "**Choice: r = 0.5, w = 0.3, confidence = 0.8.**" in (tmp_path / "augment_screen.md").read_text()
