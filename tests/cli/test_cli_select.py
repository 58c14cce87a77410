"""`tailsynth select` end to end on tiny data: a tiny real-data classifier, a candidate folder in the
generator's format (in-distribution, off-distribution, and an exact copy of a training image)."""

import csv
import json

import pytest
from typer.testing import CliRunner

from tailsynth.cli import app


def test_select_cli_writes_the_interface_files(ood_setup):
    """The rule alone (--no-floor): its quota and ranking; the floor has tests of its own below."""
    root, npz, gen = ood_setup
    out = root / "out_gamma"
    r = CliRunner().invoke(app, ["select", "--candidates", str(gen), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--gamma", "0.5", "--no-floor", "--out", str(out)])
    assert r.exit_code == 0, r.output
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == ["id", "class", "mahalanobis", "energy", "knn", "p_intended", "memorized", "kept",
                                    "floor"]
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
    assert "No floor: the rule ranked every candidate" in (out / "report.html").read_text()
    assert q["floor"]["settings"] is None and all(row["floor"] == "" for row in rows)
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


def _scores(out):
    with open(out / "scores.csv") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def test_floor_is_on_by_default_and_keeps_no_noise_even_when_the_rule_asks_for_all(ood_setup):
    root, npz, gen = ood_setup
    out = root / "out_floor"
    r = CliRunner().invoke(app, ["select", "--candidates", str(gen), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--gamma", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = _scores(out)
    noise = [row for iid, row in rows.items() if "_out_" in iid]
    assert len(noise) == 12 and all(row["kept"] == "0" and "out_of_distribution" in row["floor"] for row in noise)
    assert rows["DF_copy"]["kept"] == "0" and "memorized" in rows["DF_copy"]["floor"]
    kept = [iid for iid, row in rows.items() if row["kept"] == "1"]
    assert kept and all(rows[i]["floor"] == "" for i in kept)  # the rule chose only among what passed
    q = json.loads((out / "quality.json").read_text())
    assert q["floor"]["settings"]["quantile"] == 0.95
    for cls in ("DF", "VASC"):
        e = q["floor"]["per_class"][cls]
        assert e["generated"] == 13 and e["asked"] == 13 and e["kept"] == e["passing_floor"] < 13
        assert e["short"] == 13 - e["kept"] and e["rejected"]["out_of_distribution"] >= 6
        assert 0 < e["real_pass_rate"] <= 1
    # Fewer than asked for: the terminal says so, per class, with the reasons; so does the selection's page.
    assert "kept of 13 asked for" in r.output and "out of distribution" in r.output
    html = (out / "report.html").read_text()
    assert "The floor under the rule" in html and "real held-out passing" in html and "0.95 quantile" in html


def test_pure_noise_candidates_none_kept_and_the_run_says_which_class_trains_real_only(ood_setup, tmp_path):
    import numpy as np

    from tests.ood.conftest import RES, _write_candidates as write_candidates

    root, npz, _ = ood_setup
    rng = np.random.default_rng(1)
    gen = tmp_path / "noise"
    write_candidates(gen, [(f"{c}_{i}", c, rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8), "")
                           for c in ("DF", "VASC") for i in range(8)])
    out = tmp_path / "sel"
    r = CliRunner().invoke(app, ["select", "--candidates", str(gen), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--gamma", "0.5", "--no-report", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert all(row["kept"] == "0" and row["floor"] for row in _scores(out).values())
    with open(out / "selected_manifest.csv") as f:
        assert list(csv.DictReader(f)) == []
    for cls in ("DF", "VASC"):
        assert f"{cls}: no candidate kept: 0 of 8 pass the floor" in r.output
        assert f"{cls} trains on real images only" in r.output


def test_a_random_initialized_synthesizer_gets_nothing_past_the_floor(ood_setup, tmp_path):
    """One training step is a random UNet: its inpainted lesions are static on real backgrounds. Even a rule that
    asks for every candidate (gamma 1) keeps none of them."""
    import torch

    from tailsynth.diffusion.generate import GenerateConfig, generate
    from tailsynth.diffusion.train import train_diffusion

    torch.manual_seed(0)
    root, npz, _ = ood_setup
    model = tmp_path / "synth"
    train_diffusion(str(npz), "tiny", model, resolution=16, steps=1, batch_size=4)
    gen = tmp_path / "gen"
    generate(GenerateConfig(model=str(model), data=str(npz), out=str(gen), classes=["DF", "VASC"], policy="fixed",
                            count=8, sampler="ddim", steps=3, guidance=1.5))
    out = tmp_path / "sel"
    r = CliRunner().invoke(app, ["select", "--candidates", str(gen), "--real", str(npz), "--classifier",
                                 str(root / "clf"), "--gamma", "1", "--no-report", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = _scores(out)
    assert len(rows) == 16 and not any(row["kept"] == "1" for row in rows.values())
    assert "no candidate kept" in r.output
