"""Resume: a run killed after its third finished task, re-run with --cache, re-executes only unfinished tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from tailsynth.cli import app

ROOT = Path(__file__).resolve().parents[2]
SHARED_NPZ = ROOT.parent / "shared" / "data" / "dermamnist" / "dermamnist.npz"


def _tailsynth() -> list[str]:
    return [sys.executable, "-m", "tailsynth.cli"]


def _data(tmp_path: Path) -> Path:
    if SHARED_NPZ.is_file():
        return SHARED_NPZ
    sys.path.insert(0, str(ROOT / "tests"))
    from tailsynth_testdata import make_npz

    return make_npz(tmp_path / "dermamnist.npz", {"train": [30, 30, 30, 20, 30, 60, 20],
                                                  "val": [8, 8, 8, 6, 8, 12, 6]})


def _finished(cache_dir: Path) -> dict[str, str]:
    """key -> component of every task with a cache entry (written only after the task succeeded)."""
    out = {}
    for side in cache_dir.glob("*.task.json"):
        key = side.name.removesuffix(".task.json")
        if (cache_dir / f"{key}.json").is_file():
            out[key] = json.loads(side.read_text())["component"]
    return out


def test_killed_run_resumes_only_unfinished_tasks(tmp_path):
    out = tmp_path / "run"
    cmd = [*_tailsynth(), "pipeline", "run", "--local", "--profile", "tiny", "--data", str(_data(tmp_path)),
           "--out", str(out), "--cache"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 900
            while len(_finished(out / ".kfp_cache")) < 3 and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)  # the run and every task process it started
            first.wait(30)
    done = _finished(out / ".kfp_cache")
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    assert len(done) >= 3, (tmp_path / "first.log").read_text()[-3000:]

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    info = json.loads((out / "task_cache.json").read_text())
    assert set(info["cached_keys"]) == set(done)  # every task finished before the kill was reused ...
    assert not set(info["executed_keys"]) & set(done)  # ... and none of them ran again
    assert info["executed_tasks"], "the unfinished tasks must run"
    assert sorted(info["cached_tasks"]) == sorted(done.values())
    assert f"cached: {len(done)} task(s) reused" in second.stdout
    # Reused tasks keep their line on the terminal, with "cached" in place of seconds.
    assert sum(line.endswith("  cached") for line in second.stderr.splitlines()) == len(done), second.stderr
    report = (out / "report.md").read_text()
    assert "## Task cache" in report and all(c in report for c in done.values())
    assert (out / "comparison.csv").is_file()


def test_bad_out_is_one_line(tmp_path, tiny_npz):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = CliRunner().invoke(app, ["pipeline", "run", "--local", "--profile", "tiny", "--data", str(tiny_npz),
                                 "--out", str(blocker / "run")])
    assert r.exit_code == 1
    assert "Traceback" not in r.output and "--out" in r.output and "cannot write the run folder" in r.output
    assert len(r.output.strip().splitlines()) <= 2  # one message (rich may wrap once)
