"""Staging data into artifacts, content hashes, the selected-set manifest and the final report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tailsynth.data import load_source
from tailsynth.data.errors import DataError
from tailsynth.data.source import source_in
from tailsynth.hashing import data_revision
from tailsynth.pipeline_io import (
    augmented_dose,
    localize_manifest,
    locate_real_data,
    selection_rule,
    stage_source,
)
from tailsynth.pipeline_report import build_run_report, comparison_rows


def test_stage_isic_folder_with_cap_keeps_layout(tmp_path, tiny_isic):
    out = stage_source(tiny_isic, tmp_path / "data", max_per_class=2)
    ds = load_source(source_in(tmp_path / "data"))
    assert out == tmp_path / "data"
    assert max(ds.class_counts().values()) == 2 and ds.class_counts()["NV"] == 2
    assert len(list((tmp_path / "data" / "ISIC_2019_Training_Input").iterdir())) == len(ds)


def test_stage_whole_npz_is_byte_identical_and_hash_tracks_content(tmp_path, tiny_npz):
    staged = stage_source(tiny_npz, tmp_path / "data")
    assert data_revision(staged) == data_revision(tiny_npz)
    other = tmp_path / "other.npz"
    arrays = dict(np.load(tiny_npz))
    arrays["train_images"][0, 0, 0, 0] ^= 1
    np.savez(other, **arrays)
    assert data_revision(other) != data_revision(tiny_npz)


def test_locate_real_data(tmp_path, tiny_npz, tiny_isic):
    root = tmp_path / "root"
    (root / "dermamnist").mkdir(parents=True)
    assert locate_real_data(root) is None
    (root / "dermamnist" / "dermamnist.npz").write_bytes(tiny_npz.read_bytes())
    assert locate_real_data(root) == root / "dermamnist" / "dermamnist.npz"
    assert locate_real_data(tiny_isic.parent) == tiny_isic


def test_localize_manifest_copies_images(tmp_path):
    cand = tmp_path / "cand"
    cand.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(cand / "a.png")
    sel = tmp_path / "sel"
    sel.mkdir()
    with open(sel / "selected_manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "class", "weight"], [str(cand / "a.png"), "DF", "1.0"]])
    localize_manifest(sel)
    rows = list(csv.DictReader(Path(sel / "selected_manifest.csv").read_text().splitlines()))
    assert rows[0]["path"].startswith("images/") and (sel / rows[0]["path"]).is_file()
    assert rows[0]["class"] == "DF" and rows[0]["weight"] == "1.0"
    (sel / rows[0]["path"]).unlink()
    with open(sel / "selected_manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "class"], [str(tmp_path / "missing.png"), "DF"]])
    with pytest.raises(DataError, match="missing.png"):
        localize_manifest(sel)


def _evaluations(tmp_path, arms) -> list[Path]:
    """evaluation.json folders for (arm, balanced accuracy, DF recall) rows; NV recall 0.9."""
    evs = []
    for arm, ba, df in arms:
        d = tmp_path / arm
        d.mkdir()
        d.joinpath("evaluation.json").write_text(json.dumps({
            "arm": arm, "balanced_accuracy": ba, "classes": ["NV", "DF"],
            "per_class": {"NV": {"recall": 0.9, "support": 50}, "DF": {"recall": df, "support": 5}}}))
        evs.append(d)
    return evs


def test_build_run_report(tmp_path):
    evs = _evaluations(tmp_path, (("real-only", 0.5, 0.1), ("real+synthetic", 0.55, 0.5)))
    rows = comparison_rows(evs)
    from tailsynth.pipeline_report import write_comparison_csv

    write_comparison_csv(rows, tmp_path / "cmp.csv")
    sel = tmp_path / "sel"
    (sel / "images").mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(sel / "images" / "x.png")
    (sel / "selected_manifest.csv").write_text("path,class\nimages/x.png,DF\n")
    (sel / "quality.json").write_text(json.dumps({"per_class": {"DF": {"n_candidates": 4, "n_kept": 1}},
                                                  "overall": {"n_candidates": 4, "n_kept": 1, "acceptance_rate": 0.25}}))
    cand = tmp_path / "cand"
    (cand / "images").mkdir(parents=True)
    for cid in ("syn_DF_0", "syn_DF_1"):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(cand / "images" / f"{cid}.png")
    (cand / "manifest.csv").write_text("id,class\nsyn_DF_0,DF\nsyn_DF_1,DF\n")
    (sel / "images" / "x.png").rename(sel / "images" / "000000_syn_DF_1.png")
    (sel / "selected_manifest.csv").write_text("path,class\nimages/000000_syn_DF_1.png,DF\n")
    rec = tmp_path / "rec.json"
    rec.write_text(json.dumps({"real_content_hash": "h123", "synthetic_revision": "not-pushed"}))
    from tailsynth.pipeline_report import _manifest_images, rejected_images

    dropped = rejected_images(cand, _manifest_images(sel / "selected_manifest.csv"))
    assert {c: [p.name for p in ps] for c, ps in dropped.items()} == {"DF": ["syn_DF_0.png"]}
    diff = tmp_path / "diffusion"
    diff.mkdir()
    (diff / "tailsynth_diffusion.json").write_text(json.dumps({"size": "small", "resolution": 32, "step": 11,
                                                               "steps_planned": 800}))
    out = build_run_report(tmp_path / "report", tmp_path / "cmp.csv", evs, candidates=cand, selected=sel,
                       version_record=rec, diffusion_model=diff,
                       data_revision="sha256:feed", profile="tiny")
    md = (out / "report.md").read_text()
    assert "| real+synthetic | 0.550 |" in md and "(+0.050)" in md
    assert "sha256:feed" in md and "h123" in md
    assert "| DF | 4 | 1 | 0.250 |" in md
    html = (out / "report.html").read_text()
    assert "<table>" in html and "synthetic_grid.png" in html
    assert "selection_grid.png" in md
    assert "| training steps done / planned | 11 / 800 |" in md and "time cap" in md
    for f in ("comparison.csv", "per_class_recall.png", "synthetic_grid.png", "selection_grid.png"):
        assert (out / f).stat().st_size > 0
    assert (out / "comparison.csv").read_text().splitlines()[0] == "method,balanced_accuracy,recall_NV,recall_DF"


def test_report_tables_from_run_records(tmp_path):
    from tailsynth.pipeline_report import recorded_timings, timing_rows, version_rows
    from tailsynth.runinfo import record_stage

    record_stage(tmp_path, "train-diffusion", {"steps": 4}, seconds=12.5)
    record_stage(tmp_path, "select", {"gamma": 0.5}, wall_s=3)
    record_stage(tmp_path, "version", {})  # no duration: not a row
    assert recorded_timings(tmp_path) == {"train-diffusion": 12.5, "select": 3.0}
    assert timing_rows(recorded_timings(tmp_path))[-1] == ["total", "15.5"]
    rows = dict(version_rows({"remote": {"url": "/store"}, "synthesizer": {"hash": "abc"},
                              "sets": {"real": {"md5": "r.dir", "content_revision": "c1", "pushed": True},
                                       "synthetic": {"md5": "s.dir", "pushed": True}}}, "sha256:p"))
    assert rows["synthetic set DVC revision"] == "s.dir" and rows["real data DVC revision"] == "r.dir"
    assert rows["pushed to DVC remote"] == "/store" and rows["synthesizer hash"] == "abc"
    unpushed = dict(version_rows({"remote": None, "sets": {"synthetic": {"md5": "s.dir", "pushed": False}}}))
    assert unpushed["pushed to DVC remote"] == "not pushed (no remote)"


def test_report_compares_every_synthetic_arm_with_reference_and_control(tmp_path):
    from tailsynth.pipeline_report import write_comparison_csv

    evs = _evaluations(tmp_path, (("real-only", 0.50, 0.10), ("prior-shift control", 0.52, 0.20),
                                  ("real+synthetic", 0.55, 0.50), ("real+harmonized", 0.47, 0.30)))
    write_comparison_csv(comparison_rows(evs), tmp_path / "cmp.csv")
    harm = tmp_path / "harm"
    (harm / "images").mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(harm / "images" / "h.png")
    (harm / "selected_manifest.csv").write_text("path,class\nimages/h.png,DF\n")
    out = build_run_report(tmp_path / "report", tmp_path / "cmp.csv", evs, synthetic_arms=2,
                           extra_selected={"Harmonized tail samples": harm, "Empty arm": tmp_path / "none"})
    md = (out / "report.md").read_text()
    summary = md.splitlines()[2]
    assert "real+synthetic 0.550 (+0.050)" in summary and "real+harmonized 0.470 (-0.030)" in summary
    assert "Minus prior-shift control (0.520): +0.030" in summary and "Minus prior-shift control (0.520): -0.050" in summary
    # One Δ column per synthetic arm, against the reference; none for the control.
    assert "real+synthetic - real-only | real+harmonized - real-only |" in md and "control - real-only" not in md
    assert "| +0.400 | +0.200 |" in md
    assert "## Harmonized tail samples" in md and (out / "synthetic_grid_2.png").stat().st_size > 0
    assert "## Empty arm" in md and "No synthetic image was kept." in md
    with pytest.raises(Exception, match="cannot hold a reference and 4"):
        build_run_report(tmp_path / "bad", tmp_path / "cmp.csv", evs, synthetic_arms=4)


def test_selection_rule_and_dose_from_stage_parameters():
    assert selection_rule(0.5, 0.0, 0.0) == {"gamma": 0.5, "calibrate": None}
    assert selection_rule(0.0, 0.9, 0.0) == {"gamma": None, "calibrate": 0.9}
    assert selection_rule(0.5, 0.0, 0.8) == {"clean": True, "clean_confidence": 0.8}  # gamma is not used then
    with pytest.raises(ValueError, match="two selection rules"):
        selection_rule(0.0, 0.9, 0.8)
    # The arm and its control: replacing dose (the control draws real images at the arm's counts) and additive
    # dose (the control replays the same extra tail draws as real images).
    assert augmented_dose(0.0, "replace", False) == {"synthetic_ratio": None, "synthetic_dose": "replace"}
    assert augmented_dose(0.3, "replace", True) == {"synthetic_ratio": 0.0, "synthetic_dose": "replace"}
    assert augmented_dose(0.25, "add", False) == {"synthetic_ratio": 0.25, "synthetic_dose": "add"}
    assert augmented_dose(0.25, "add", True) == {"synthetic_ratio": 0.25, "synthetic_dose": "replay"}


def test_lineage_rows_name_the_selection_rule_and_the_dose():
    from tailsynth.pipeline_report import lineage_rows

    card = {"version": "v1", "backbone": "resnet18", "lineage": {
        "classifier": {"loss": "ce", "synthetic_dose": "add", "synthetic_ratio": 0.25, "synthetic_weight": 0.3},
        "training_data": {"revision": "sha256:x"}, "synthetic_set": {"dvc_md5": "m", "n_images": 12},
        "synthesizer": {"hash": "h"},
        "selection": {"rule": "clean", "score": "mahalanobis", "gamma": None, "cleaning": {"confidence": 0.8}}}}
    rows = dict(lineage_rows(card))
    assert rows["selection"].startswith("cleaning rule (not p >= 0.8 another class") and "gamma" not in rows["selection"]
    assert rows["synthetic dose"] == "add, share 0.25 of a tail class's draws, loss weight 0.3"
    card["lineage"]["selection"] = {"rule": "keep-fraction", "score": "mahalanobis", "gamma": 0.5, "calibrate": None}
    card["lineage"]["classifier"] = {"loss": "ce"}  # a model card from before the dose was recorded
    rows = dict(lineage_rows(card))
    assert rows["selection"] == "score=mahalanobis, gamma=0.5"
    assert rows["synthetic dose"] == "replace, the pooled share, loss weight 1"
