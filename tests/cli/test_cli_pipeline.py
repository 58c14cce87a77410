"""CLI behaviour that needs no pipeline run: clear errors for bad input and unreachable hosts, compile output."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from tailsynth.cli import app

runner = CliRunner()


def said(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more
    return port


def test_submit_unreachable_host_is_a_clear_error():
    host = f"http://127.0.0.1:{_closed_port()}"
    r = runner.invoke(app, ["pipeline", "submit", "--host", host, "--data-revision", "abc", "--profile", "tiny"])
    assert r.exit_code == 1
    assert "unreachable" in said(r) and host in said(r)


def test_submit_rejects_unknown_profile():
    r = runner.invoke(app, ["pipeline", "submit", "--host", "http://127.0.0.1:1", "--data-revision", "a",
                            "--profile", "huge"])
    assert r.exit_code == 1 and "huge" in said(r)


def test_run_requires_local_and_data(tmp_path):
    r = runner.invoke(app, ["pipeline", "run", "--profile", "tiny", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--local" in said(r)
    r = runner.invoke(app, ["pipeline", "run", "--local", "--profile", "tiny", "--data", str(tmp_path / "none"),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "tailsynth data fetch dermamnist" in said(r)


def test_run_rejects_unknown_override(tmp_path, tiny_npz):
    r = runner.invoke(app, ["pipeline", "run", "--local", "--profile", "tiny", "--data", str(tiny_npz),
                            "--out", str(tmp_path / "o"), "--set", "epochz=3"])
    assert r.exit_code == 1 and "epochz" in said(r)


@pytest.mark.parametrize("value", ["0", "1.5", "half"])
def test_run_rejects_bad_train_fraction_before_any_task(tmp_path, tiny_npz, value):
    r = runner.invoke(app, ["pipeline", "run", "--local", "--profile", "tiny", "--data", str(tiny_npz),
                            "--out", str(tmp_path / "o"), "--set", f"train_fraction={value}"])
    assert r.exit_code == 1 and "train_fraction must be a number in (0, 1]" in said(r)
    assert not (tmp_path / "o" / "artifacts").exists()


def test_main_without_data_says_how_to_fetch(tmp_path):
    r = runner.invoke(app, ["main", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert r.exit_code == 1
    assert "tailsynth data fetch dermamnist" in said(r)


def test_compile_writes_both_pipelines(tmp_path):
    r = runner.invoke(app, ["pipeline", "compile", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regenerate_tail.yaml", "train_augment.yaml"]
