"""Issue 31: a prediction log with torn lines (a write cut short by a full disk or a crash, as versions before
the rolled-back writes left them) is read without them: they are skipped, counted and named, and the monitor
report shows how many. Schema errors in valid JSON still stop the reader, naming file:line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tailsynth.errors import DataError
from tailsynth.monitor.records import read_records
from tailsynth.monitor.report import build_window_report
from tailsynth.predictions import FailureLedger, JsonlSink, RecordWriteError, make_record

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


def _records(rng, n, prefix):
    out = []
    for i in range(n):
        stats = {"brightness": rng.normal(120, 10), "contrast": rng.normal(30, 3), "mean_r": rng.normal(150, 9),
                 "mean_g": rng.normal(110, 9), "mean_b": rng.normal(100, 9), "saturation": rng.random(),
                 "height": 28, "width": 28}
        out.append(make_record(probabilities=rng.dirichlet(np.ones(7)), classes=CLASSES, image_stats=stats,
                               image_hash=f"h{prefix}{i}", model_version="v1", embedding=rng.normal(size=3),
                               request_id=f"{prefix}{i}"))
    return out


def _line(rec) -> str:
    return json.dumps(rec, separators=(",", ":"))


def _old_torn_log(path, recs):
    """What the sink before issue 31 left after a full disk: a fragment (the end of a write that did not fit),
    the next record appended onto it when space came back, and a last write cut short."""
    text = "".join(_line(r) + "\n" for r in recs[:120])
    text += _line(recs[120])[:90] + _line(recs[121]) + "\n"  # line 121: fragment + whole record, one line
    text += "".join(_line(r) + "\n" for r in recs[122:-1])
    text += _line(recs[-1])[:-7]  # the last line, torn
    path.write_text(text)


def test_reader_skips_and_counts_the_torn_lines_of_an_old_log(tmp_path):
    recs = _records(np.random.default_rng(0), 200, "c")
    log = tmp_path / "predictions.jsonl"
    _old_torn_log(log, recs)
    back = read_records(log)
    assert [r["request_id"] for r in back] == [r["request_id"] for r in recs[:120] + recs[122:-1]]
    assert [s.where for s in back.skipped] == [f"{log}:121", f"{log}:199"]
    assert all("not valid JSON" in s.reason for s in back.skipped)
    # A folder of logs: the skipped lines of every file, each named.
    other = tmp_path / "older.jsonl"
    other.write_text(_line(recs[0]) + "\n" + "\x00\x00\x00" + "\n")
    both = read_records(tmp_path)
    assert len(both) == len(back) + 1 and len(both.skipped) == 3


def test_valid_json_that_is_not_a_record_is_still_an_error_naming_the_line(tmp_path):
    recs = _records(np.random.default_rng(1), 3, "s")
    log = tmp_path / "predictions.jsonl"
    bad = {k: v for k, v in recs[1].items() if k != "probabilities"}
    log.write_text(_line(recs[0]) + "\n" + _line(bad) + "\n")
    with pytest.raises(DataError, match=r"predictions.jsonl:2: record s1 lacks field 'probabilities'"):
        read_records(log)


def test_monitor_report_shows_skipped_lines_and_the_servers_failed_writes(tmp_path):
    rng = np.random.default_rng(2)
    ref = tmp_path / "reference.jsonl"
    JsonlSink(ref).write(_records(rng, 200, "r"))
    log = tmp_path / "live" / "predictions.jsonl"
    log.parent.mkdir()
    _old_torn_log(log, _records(rng, 200, "c"))
    # The ledger a server left beside the log: two failed writes of 3 records each.
    ledger = FailureLedger(log)
    for _ in range(2):
        ledger.add_failure(RecordWriteError(log, OSError(28, "No space left on device"), 3, True))
    ledger.close()
    cfg = tmp_path / "m.yaml"
    cfg.write_text("tail:\n  classes: [DF, VASC]\ndrift:\n  min_samples: 10\n")
    s = build_window_report(log, ref, tmp_path / "rep" / "w", config=cfg, evidently=False)
    dq = s["data_quality"]
    assert dq["records"] == 197 and dq["skipped_lines"] == 2 and dq["reference_skipped_lines"] == 0
    assert dq["skipped_examples"][0].startswith(f"{log}:121: not valid JSON")
    assert dq["write_failures"]["failed_writes"] == 2 and dq["write_failures"]["failed_records"] == 6
    assert json.loads((tmp_path / "rep" / "w" / "summary.json").read_text())["data_quality"]["skipped_lines"] == 2
    page = (tmp_path / "rep" / "w" / "report.html").read_text()
    assert "2 unreadable line(s) skipped" in page and "2 record write(s) failed on the server, 6 record(s)" in page
