"""The monitor CLI answers bad input with one named line and exit code 1 or 2."""

from __future__ import annotations

from typer.testing import CliRunner

from tailsynth.cli import app


def test_report_errors_are_named(tmp_path):
    ref = tmp_path / "ref.jsonl"
    ref.write_text("")
    r = CliRunner().invoke(app, ["monitor", "report", "--log", str(tmp_path / "none.jsonl"), "--reference", str(ref),
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "none.jsonl: prediction log not found" in r.output
    r = CliRunner().invoke(app, ["monitor", "report", "--log", str(ref), "--reference", str(ref), "--out",
                                 str(tmp_path / "o"), "--trigger", "cron"])
    assert r.exit_code == 2 and "expected none, dry-run, local or kfp" in r.output
    r = CliRunner().invoke(app, ["monitor", "score", "--model", str(tmp_path), "--data", str(ref), "--out",
                                 str(tmp_path / "l.jsonl")])
    assert r.exit_code == 1 and "no classifier checkpoint" in r.output
