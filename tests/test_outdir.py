"""One writer per output folder (tailsynth.outdir), with real processes holding and dying with the lock, and the
CLI's rules for a finished --out: refused unless --overwrite, accepted by the resume paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tailsynth
from tailsynth.cli import app
from tailsynth.errors import ConfigError, OutputBusyError
from tailsynth.outdir import LOCK_FILE, claim, read_holder
from tailsynth.runinfo import read_run, record_stage

runner = CliRunner()
SRC = Path(tailsynth.__file__).resolve().parents[1]

HOLD = """
import sys, time
from tailsynth.outdir import claim
with claim(sys.argv[1], "holder test", command="holder test"):
    print("held", flush=True)
    time.sleep(120)
"""


def said(result) -> str:
    return " ".join(result.output.split())


def _env() -> dict:
    """The environment of a child process that imports the same tailsynth (and pipelines) as this test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), str(SRC.parent), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the lock of tmp_path/out until the test ends."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout.readline().strip() == "held"
        yield out, proc
    finally:
        proc.kill()
        proc.wait(10)


def test_second_writer_is_refused_naming_the_holder(holder):
    out, proc = holder
    with pytest.raises(OutputBusyError) as e:
        with claim(out, "second"):
            pass
    msg = str(e.value)
    assert str(out) in msg and f"pid {proc.pid}" in msg and "holder test" in msg
    assert read_holder(out)["pid"] == proc.pid  # the refused claim did not touch the holder's record


def test_second_cli_writer_exits_with_the_holders_pid(holder, tmp_path):
    out, proc = holder
    r = subprocess.run([sys.executable, "-m", "tailsynth.cli", "evaluate", "--model", str(tmp_path / "m"),
                        "--data", str(tmp_path / "d.npz"), "--out", str(out)], capture_output=True, text=True,
                       env=_env(), timeout=120)
    err = " ".join(r.stderr.split())
    assert r.returncode == 1, r.stderr
    assert "another process is writing this folder" in err and f"pid {proc.pid}" in err and str(out) in err
    assert "Traceback" not in r.stderr


def test_a_dead_holders_lock_is_recovered(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "held"
    proc.send_signal(signal.SIGKILL)  # no clean-up: the lock file stays, naming the dead holder
    proc.wait(10)
    assert read_holder(out)["pid"] == proc.pid
    with claim(out, "next"):
        assert read_holder(out)["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()  # released: a finished folder keeps no lock file


def test_finished_run_is_refused_unless_overwritten_or_resumed(tmp_path):
    out = tmp_path / "out"
    with claim(out, "masks"):
        record_stage(out, "masks", {"a": 1})
    with pytest.raises(ConfigError) as e:
        with claim(out, "masks", resume_hint="pass --resume to continue it"):
            pass
    assert str(out) in str(e.value) and "--overwrite" in str(e.value) and "--resume" in str(e.value)
    for kw in ({"overwrite": True}, {"resume": True}):
        with claim(out, "masks", **kw):
            pass
    with claim(out, "evaluate"):  # another stage sharing the folder (run.yaml merges stages)
        pass


@pytest.mark.parametrize("status", ["running", "failed"])
def test_a_run_that_did_not_finish_may_run_again(tmp_path, status):
    out = tmp_path / "out"
    record_stage(out, "pipeline train_augment", {}, status=status)
    with claim(out, "pipeline train_augment"):
        pass


def test_done_file_marks_a_finished_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "quality.json").write_text("{}")
    with pytest.raises(ConfigError, match="quality.json"):
        with claim(out, "synth-quality", done_file="quality.json"):
            pass


def test_out_that_is_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="a file is in the way"):
        with claim(f, "masks"):
            pass


def _train(data: Path, out: Path, *extra: str):
    return runner.invoke(app, ["train", "classifier", "--data", str(data), "--backbone", "test_resnet",
                               "--epochs", "1", "--out", str(out), "--batch-size", "16", "--threads", "1",
                               "--quiet", *extra])


def test_cli_finished_out_needs_overwrite_and_resume_still_works(tiny_npz, tmp_path):
    model = tmp_path / "model"
    r = _train(tiny_npz, model)
    assert r.exit_code == 0, r.output
    before = (model / "model.pt").stat().st_mtime_ns

    r = _train(tiny_npz, model)
    assert r.exit_code == 1
    assert str(model) in said(r) and "--overwrite" in said(r) and "--resume" in said(r)
    assert (model / "model.pt").stat().st_mtime_ns == before  # nothing was written

    r = _train(tiny_npz, model, "--resume")
    assert r.exit_code == 0, r.output
    r = _train(tiny_npz, model, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (model / "model.pt").stat().st_mtime_ns != before
    assert "overwrite" not in read_run(model)["stages"]["train classifier"]["params"]
    assert not (model / LOCK_FILE).exists()


def test_cli_experiment_resumes_into_its_own_out(tiny_npz, tmp_path):
    ex = tmp_path / "exp"
    args = ["experiment", "--data", str(tiny_npz), "--out", str(ex), "--methods", "ce", "--seeds", "0",
            "--backbone", "test_resnet", "--epochs", "1", "--threads", "1", "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    run_model = ex / "runs" / "ce" / "seed0" / "model.pt"
    before = run_model.stat().st_mtime_ns
    r = runner.invoke(app, args)  # an experiment reuses its finished runs by design: no --overwrite needed
    assert r.exit_code == 0, r.output
    assert run_model.stat().st_mtime_ns == before
    assert json.loads(r.stdout.strip().splitlines()[-1])["table"]
