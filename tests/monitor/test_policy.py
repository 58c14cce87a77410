"""Regeneration policy: config errors named, tail classes, decisions for tail classes only, idempotent triggers,
an audit entry for every decision."""

from __future__ import annotations

import json

import pytest

from pipelines.trigger import KfpClientSubmitter, submitter_for
from tailsynth.data.errors import DataError
from tailsynth.monitor.policy import (
    DryRun,
    MonitorConfig,
    decide,
    execute,
    load_config,
    read_audit,
    resolve_tail,
)

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


def _verdict(flagged, alpha=0.01):
    classes = {}
    for c in CLASSES:
        on = c in flagged
        classes[c] = {"n_ref": 30, "n_cur": 30, "share_ref": 0.1, "share_cur": 0.1, "min_p_adj": 1e-6 if on else 1.0,
                      "tests": {"brightness": {"p": 1e-8 if on else 0.5, "p_adj": 1e-6 if on else 1.0, "drift": on}},
                      "share_drift": False, "confidence_drift": False, "embedding_drift": False, "image_drift": on,
                      "recall_drop": False, "drift": on}
    return {"flagged": list(flagged), "classes": classes, "alpha": alpha}


def test_config_errors_name_the_key(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("drift:\n  alpah: 0.1\n")
    with pytest.raises(DataError, match=r"m.yaml: drift: unknown key\(s\) alpah"):
        load_config(p)
    p.write_text("tail:\n  class: [DF]\n")
    with pytest.raises(DataError, match=r"tail: unknown key\(s\) class"):
        load_config(p)
    p.write_text("drift:\n  group_by: random\n")
    with pytest.raises(DataError, match="group_by must be"):
        load_config(p)
    from tailsynth.errors import MissingInputError

    with pytest.raises(MissingInputError, match="monitor config not found"):  # one reader for every YAML config
        load_config(tmp_path / "none.yaml")


def test_tail_classes():
    counts = {"MEL": 779, "NV": 4693, "BCC": 359, "AK": 228, "BKL": 769, "DF": 80, "VASC": 99}
    assert resolve_tail(MonitorConfig(), CLASSES, counts, None)[0] == ["AK", "DF", "VASC"]
    assert resolve_tail(MonitorConfig(tail_share_below=0.02), CLASSES, counts, None)[0] == ["DF", "VASC"]
    assert resolve_tail(MonitorConfig(tail_classes=["VASC"]), CLASSES, counts, None) == (["VASC"], "config tail.classes")
    with pytest.raises(DataError, match="XX not among"):
        resolve_tail(MonitorConfig(tail_classes=["XX"]), CLASSES, counts, None)


def test_decisions_only_for_tail_and_audit(tmp_path):
    dec = decide("w1", _verdict(["NV", "DF"]), ["AK", "DF", "VASC"])
    assert [(d["class"], d["action"]) for d in dec] == [("NV", "none"), ("DF", "regenerate")]
    assert dec[1]["evidence"]["significant_tests"]["brightness"]["p_adj"] == 1e-6
    audit = tmp_path / "audit.jsonl"
    trig = execute(dec, DryRun(), MonitorConfig(), audit)
    assert trig["status"] == "dry-run" and trig["would_submit"]["classes"] == ["DF"]
    log = read_audit(audit)
    assert [(e["event"], e.get("class"), e.get("trigger_status")) for e in log] == \
        [("decision", "NV", "n/a"), ("decision", "DF", "dry-run"), ("trigger", None, None)]


def test_trigger_is_idempotent_per_window(tmp_path):
    audit = tmp_path / "audit.jsonl"
    # an earlier run of this window already submitted a pipeline run
    audit.write_text(json.dumps({"event": "trigger", "window": "w7", "status": "submitted", "mode": "kfp",
                                 "run_id": "run-123", "classes": ["VASC"], "time": "t0"}) + "\n")
    dec = decide("w7", _verdict(["VASC"]), ["DF", "VASC"])
    trig = execute(dec, KfpClientSubmitter(), MonitorConfig(), audit)
    assert trig["status"].startswith("skipped: already triggered") and trig["previous"]["run_id"] == "run-123"
    # another window is not blocked; without a configured endpoint the failure itself is recorded
    dec2 = decide("w8", _verdict(["VASC"]), ["DF", "VASC"])
    trig2 = execute(dec2, KfpClientSubmitter(), MonitorConfig(), audit)
    assert trig2["status"] == "failed" and "trigger.arguments lacks source, data_revision" in trig2["error"]
    events = [e for e in read_audit(audit) if e["event"] == "trigger"]
    assert [e["window"] for e in events] == ["w7", "w7", "w8"]


def test_unknown_trigger_mode(tmp_path):
    with pytest.raises(ValueError, match="--trigger 'cron'"):
        submitter_for("cron")
    assert submitter_for("none") is None and submitter_for("local").mode == "local"


def test_kfp_trigger_reaches_the_submit_entry_point(tmp_path):
    """--trigger kfp goes through pipelines.submit; a dead endpoint is a recorded failure, not a crash,
    and a failed trigger does not block the next run of the same window."""
    import socket

    from tailsynth.monitor.policy import TriggerSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    cfg = MonitorConfig(trigger=TriggerSettings(host=f"http://127.0.0.1:{port}",
                                                arguments={"source": "s3://b/data", "data_revision": "r1"}))
    audit = tmp_path / "audit.jsonl"
    for _ in range(2):
        trig = execute(decide("w9", _verdict(["DF"]), ["DF"]), KfpClientSubmitter(), cfg, audit)
        assert trig["status"] == "failed" and "unreachable" in trig["error"], trig
    assert [e["status"] for e in read_audit(audit) if e["event"] == "trigger"] == ["failed", "failed"]
