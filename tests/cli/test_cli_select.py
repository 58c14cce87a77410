"""`tailsynth select` end to end on tiny data: a tiny real-data classifier, a candidate folder in the
generator's format (in-distribution, off-distribution, and an exact copy of a training image)."""

import csv
import json

import pytest
from typer.testing import CliRunner

from tailsynth.cli import app


def test_select_cli_writes_the_interface_files(ood_setup):
    root, npz, gen = ood_setup
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


def test_select_cli_calibrated_with_weights(ood_setup):
    root, npz, gen = ood_setup
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


def test_select_cli_bad_input_names_the_problem(ood_setup, tmp_path):
    root, npz, gen = ood_setup
    r = CliRunner().invoke(app, ["select", "--candidates", str(tmp_path / "nope"), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--gamma", "0.5", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "candidate folder not found" in r.output
    r = CliRunner().invoke(app, ["select", "--candidates", str(gen), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--gamma", "0.5", "--calibrate", "0.9", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "exactly one" in r.output
