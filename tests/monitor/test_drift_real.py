"""Replay of real held-out DermaMNIST images through a classifier trained here: i.i.d. traffic flags nothing,
a shifted tail class (or a change in its share) is flagged alone and gets exactly one regeneration decision."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.monitor.policy import DryRun
from tailsynth.monitor.records import read_records, records_frame
from tailsynth.monitor.report import build_window_report
from tailsynth.monitor.score import apply_shifts, parse_shift
from tailsynth.monitor.stats import DriftSettings, evaluate_window
from tailsynth.predictions import JsonlSink


def test_reference_beside_model(drill):
    ref = drill["reference"]
    assert ref == drill["model"] / "monitor" / "reference.jsonl"
    assert (drill["model"] / "monitor" / "embedding.npz").is_file()
    recs = read_records(ref)
    assert len(recs) == drill["sizes"]["ref"]
    assert all(len(r["embedding"]) == 5 and r["label"] for r in recs)
    # A 40-step model is weak, but it must not be constant, or confidence/embedding tests are empty.
    assert len({r["predicted"] for r in recs}) >= 3


def test_iid_window_flags_nothing(drill, live_records, tmp_path):
    log = tmp_path / "iid.jsonl"
    JsonlSink(log).write(live_records)
    s = build_window_report(log, drill["reference"], tmp_path / "reports" / "iid", submitter=DryRun())
    assert s["flagged"] == [] and s["decisions"] == []
    assert s["trigger"]["status"] == "nothing to trigger"
    assert set(s["tail_classes"]) == {"AK", "DF", "VASC"}  # < 5% of the training images
    out = tmp_path / "reports" / "iid"
    assert (out / "report.html").is_file() and (out / "evidently" / "overall.html").is_file()
    assert (tmp_path / "reports" / "index.html").read_text().count(s["window"]) == 1
    assert json.loads((out / "summary.json").read_text())["classes"]["DF"]["drift"] is False
    # Evidently's KS p-values are the ones the decision used.
    compared = 0
    for c, cols in s["evidently_pvalues"].items():
        for col, p in cols.items():
            assert abs(p - s["classes"][c]["tests"][col]["p"]) < 1e-9
            compared += 1
    assert compared >= 20


def test_repeated_iid_windows_rarely_flag(drill, live_records):
    ref = records_frame(read_records(drill["reference"]))
    rng = np.random.default_rng(7)
    flagged = []
    for _ in range(8):
        idx = rng.choice(len(live_records), size=len(live_records) * 2 // 3, replace=False)
        res = evaluate_window(ref, records_frame([live_records[i] for i in idx]), list(ref.columns[6:13].str[2:]),
                              DriftSettings())
        flagged.append(res["flagged"])
    assert sum(bool(f) for f in flagged) <= 1, flagged


def test_brightness_shift_on_tail_class_is_flagged_alone(drill, tmp_path):
    log, out = tmp_path / "vasc.jsonl", tmp_path / "reports" / "w1"
    r = CliRunner().invoke(app, ["monitor", "score", "--model", str(drill["model"]), "--data", str(drill["data"]),
                                 "--split", "live", "--splits", str(drill["manifest"]), "--shift", "brightness:VASC",
                                 "--out", str(log)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["shifts"] == ["brightness:VASC=1.35"]
    r = CliRunner().invoke(app, ["monitor", "report", "--log", str(log), "--reference", str(drill["reference"]),
                                 "--out", str(out), "--trigger", "dry-run"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["flagged"] == ["VASC"]
    assert s["classes"]["VASC"]["drift"] and s["classes"]["VASC"]["image_drift"]
    assert [(d["class"], d["action"]) for d in s["decisions"]] == [("VASC", "regenerate")]
    assert s["trigger"]["status"] == "dry-run" and s["trigger"]["would_submit"]["classes"] == ["VASC"]
    audit = [json.loads(x) for x in (tmp_path / "reports" / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("class")) for e in audit] == [("decision", "VASC"), ("trigger", None)]
    assert audit[0]["evidence"]["significant_tests"]["brightness"]["p_adj"] < 0.05


def test_share_change_of_tail_class_is_flagged_alone(drill, live_records, tmp_path):
    labels = [r["label"] for r in live_records]
    _, rows = apply_shifts(np.zeros((len(labels), 1, 1, 3), np.uint8), labels, [parse_shift("share:DF=5")])
    log = tmp_path / "df_share.jsonl"
    JsonlSink(log).write([live_records[i] for i in rows])
    s = build_window_report(log, drill["reference"], tmp_path / "reports" / "w2", submitter=None, evidently=False)
    assert s["flagged"] == ["DF"]
    df = s["classes"]["DF"]
    assert df["share_drift"] and df["share_cur"] > 3 * df["share_ref"]
    assert [(d["class"], d["action"], d["trigger_status"]) for d in s["decisions"]] == \
        [("DF", "regenerate", "not triggered (--trigger none)")]
