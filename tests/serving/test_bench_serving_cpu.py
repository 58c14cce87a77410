"""benchmarks/bench_serving_cpu.py: the CPU-per-request bound (pure) and a short real run against Triton."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_serving_cpu", ROOT / "benchmarks" / "bench_serving_cpu.py")
bc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bc)


def test_bound_leaves_the_transformer_what_the_others_do_not_use():
    row = {"cpu_ms_per_request": {"transformer": 1.5, "python_backend_stub": 0.5, "tritonserver": 0.1, "client": 0.2}}
    b = bc.bound(row, direct_rps=2000.0, cores=2, goal=0.2)
    assert b["needed_rps"] == pytest.approx(1600.0)
    assert b["cpu_ms_per_request_allowed"] == pytest.approx(1.25)
    assert b["non_transformer_ms"] == pytest.approx(0.8)
    assert b["transformer_budget_ms"] == pytest.approx(0.45) and b["transformer_measured_ms"] == 1.5


def test_process_tree_and_cpu_time_see_a_busy_child():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<0.6: pass"])
    try:
        time.sleep(0.5)
        tree = bc.process_tree(os.getpid())
        assert child.pid in tree and os.getpid() in tree
        assert bc.cpu_s(child.pid) > 0.1  # it has been spinning for ~0.5 s
    finally:
        child.wait(10)
    assert bc.cpu_s(2**22 + 12345) == 0.0  # no such process
    assert [bc.role(n) for n in ("triton_python_backend_stub", "tritonserver", "tailsynth")] == [
        "python_backend_stub", "tritonserver", "transformer"]


@pytest.mark.slow  # one `tailsynth serve` with its own Triton (~40 s on 2 cores)
def test_short_run_accounts_for_every_process(triton_env, local_repo, isic_sample, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serving_cpu.py"), "--model",
                          str(local_repo), "--images", str(isic_sample), "--n-images", "6", "--requests", "60",
                          "--concurrency", "4", "--direct-rps", "500", "--out", str(tmp_path / "c.json")],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads((tmp_path / "c.json").read_text())
    row = rep["variants"][0]
    assert set(row["cpu_s"]) == {"transformer", "tritonserver", "python_backend_stub", "client"}
    assert all(v > 0 for v in row["cpu_s"].values()) and row["throughput_rps"] > 0
    assert row["tuning"]["coalesce"] == 1
    assert rep["decode_ms_per_image"]["exact"] > 0 and "default" in rep["bounds"]
