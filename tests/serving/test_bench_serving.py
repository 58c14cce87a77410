"""benchmarks/bench_serving.py: its figures (pure functions) and end-to-end runs at a tiny size against real servers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "benchmarks" / "bench_serving.py")
bs = importlib.util.module_from_spec(_spec)
sys.modules["bench_serving"] = bs  # dataclasses look their module up by name
_spec.loader.exec_module(bs)


def test_percentile_and_summary():
    lat = np.arange(1, 101) / 1000.0  # 1..100 ms
    assert bs.percentile(list(range(1, 101)), 50) == 50.5
    assert bs.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    s = bs.summarize(lat, wall_s=2.0)
    assert s["requests"] == 100 and s["throughput_rps"] == 50.0
    assert s["p50_ms"] == pytest.approx(50.5) and s["p95_ms"] == pytest.approx(95.05)
    assert s["p99_ms"] == pytest.approx(99.01) and s["mean_ms"] == pytest.approx(50.5)
    with pytest.raises(ValueError):
        bs.percentile([], 50)
    with pytest.raises(ValueError):
        bs.summarize(lat, 0.0)


def test_median_round_keeps_the_middle_round_and_all_throughputs():
    rows = [{"throughput_rps": t, "p99_ms": p} for t, p in ((30.0, 1), (10.0, 2), (20.0, 3))]
    m = bs.median_round(rows)
    assert m["throughput_rps"] == 20.0 and m["p99_ms"] == 3 and m["rounds_throughput_rps"] == [30.0, 10.0, 20.0]
    assert bs.median_round(rows[:2])["throughput_rps"] == 30.0  # even count: the upper middle


def test_overhead_and_ratios():
    direct = {"throughput_rps": 100.0, "p50_ms": 10.0, "p99_ms": 30.0}
    endpoint = {"throughput_rps": 80.0, "p50_ms": 12.5, "p99_ms": 40.0}
    o = bs.overhead(endpoint, direct)
    assert o["throughput_overhead"] == pytest.approx(0.2)
    assert o["p50_added_ms"] == pytest.approx(2.5) and o["p99_added_ms"] == pytest.approx(10.0)
    assert bs.overhead(direct, direct)["throughput_overhead"] == 0.0
    results = {"torch_eager": {"32": {"throughput_rps": 25.0, "p50_ms": 100.0, "p99_ms": 200.0}},
               "triton_direct": {"32": dict(direct)}, "triton_endpoint": {"32": dict(endpoint)}}
    labels = {"torch_eager": {"system": "torch_eager", "variant": None},
              "triton_direct": {"system": "triton_direct", "variant": "default"},
              "triton_endpoint": {"system": "triton_endpoint", "variant": "default"}}
    d = bs.analyse(results, labels)
    assert results["triton_endpoint"]["32"]["throughput_vs_torch"] == pytest.approx(3.2)
    assert results["torch_eager"]["32"]["throughput_vs_torch"] == 1.0
    g = d["goals"]["default"]
    assert g["vs_torch_goal_met"] and g["overhead_goal_met"]  # 3.2x >= 3x, and 20% <= 20%
    results["triton_endpoint"]["32"]["throughput_rps"] = 70.0
    g = bs.analyse(results, labels)["goals"]["default"]
    assert not g["vs_torch_goal_met"] and not g["overhead_goal_met"]


def test_ensemble_goals_against_direct_and_the_transformer():
    row = {"throughput_rps": 0.0, "p50_ms": 1.0, "p99_ms": 9.0}
    results = {s: {"32": {**row, "throughput_rps": t}} for s, t in
               (("torch_eager", 25.0), ("triton_direct", 100.0), ("triton_endpoint", 50.0), ("triton_ensemble", 80.0))}
    labels = {s: {"system": s, "variant": None if s == "torch_eager" else "default"} for s in results}
    g = bs.analyse(results, labels)["ensemble_goals"]["default"]
    assert g["vs_direct"] == pytest.approx(0.8) and g["vs_direct_goal_met"]
    assert g["vs_endpoint"] == pytest.approx(1.6) and g["vs_endpoint_goal_met"] and g["p99_ms"] == 9.0
    results["triton_ensemble"]["32"]["throughput_rps"] = 70.0
    g = bs.analyse(results, labels)["ensemble_goals"]["default"]
    assert not g["vs_direct_goal_met"] and not g["vs_endpoint_goal_met"]
    del results["triton_direct"], labels["triton_direct"]
    assert bs.analyse(results, labels)["ensemble_goals"]["default"]["vs_direct"] is None


def test_shares_and_concurrency_list():
    assert bs.shares(10, 3) == [4, 3, 3] and sum(bs.shares(7, 7)) == 7
    assert bs.parse_concurrency(["1,8,32"]) == [1, 8, 32] == bs.parse_concurrency(["32", "1", "8", "8"])
    with pytest.raises(SystemExit):
        bs.parse_concurrency(["0,2"])


def test_variants_split_their_settings():
    v = bs.parse_variant("lean:instances=2,ort_threads=1,preferred_batch_sizes=8/16,ort_spinning=on,"
                         "workers=2,jpeg_draft=0,protocol=v2")
    assert v.name == "lean" and v.protocol == "v2"
    assert v.triton == {"instances": 2, "ort_threads": 1, "preferred_batch_sizes": (8, 16), "ort_spinning": True}
    assert v.tuning == {"workers": 2, "jpeg_draft": False}
    assert bs.parse_variant("default") == bs.Variant("default")
    assert bs._tuning_flags(v.tuning) == ["--workers", "2", "--exact-decode"]
    for bad in ("x:colour=red", "x:instances", "x:protocol=v3", ":instances=2"):
        with pytest.raises(SystemExit):
            bs.parse_variant(bad)


def _run(args, tmp_path, timeout):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serving.py"), *args,
                          "--out", str(tmp_path / "r.json"), "--out-md", str(tmp_path / "r.md"),
                          "--plot", str(tmp_path / "r.png")], capture_output=True, text=True, timeout=timeout,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((tmp_path / "r.json").read_text())


def _check_rows(rep, labels, concurrency):
    assert set(rep["results"]) == set(labels)
    for rows in rep["results"].values():
        assert set(rows) == {str(c) for c in concurrency}
        for row in rows.values():
            assert row["throughput_rps"] > 0 and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
            assert row["throughput_vs_torch"] > 0
    # Every system answers what torch eager answers for the same images.
    assert all(d < 1e-4 for d in rep["answers_max_abs_diff_vs_torch"].values()), rep["answers_max_abs_diff_vs_torch"]
    assert all(code == 0 for code in rep["endpoint_exit_codes"])  # SIGTERM: clean stop, Triton included


def test_bench_smoke_in_process_and_onnxruntime_endpoint(local_repo, isic_sample, tmp_path):
    rep = _run(["--model", str(local_repo), "--images", str(isic_sample), "--n-images", "6", "--requests", "6",
                "--min-per-worker", "1", "--warmup", "2", "--rounds", "1", "--concurrency", "1,3",
                "--systems", "torch_eager", "onnxruntime", "onnxruntime_endpoint"], tmp_path, 300)
    _check_rows(rep, {"torch_eager", "onnxruntime", "onnxruntime_endpoint"}, [1, 3])
    assert rep["results"]["torch_eager"]["3"]["throughput_vs_torch"] == 1.0
    assert rep["model"]["untrained"] is False and rep["model"]["resolution"] == 32
    assert "| onnxruntime_endpoint | 3 |" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # two `tailsynth serve` with their own Triton (~1 min on 2 cores)
def test_bench_smoke_triton_direct_endpoint_and_a_variant(triton_env, local_repo, isic_sample, tmp_path):
    rep = _run(["--model", str(local_repo), "--images", str(isic_sample), "--n-images", "6", "--requests", "6",
                "--min-per-worker", "1", "--warmup", "2", "--rounds", "2", "--concurrency", "1,2",
                "--variant", "default",
                "--variant", "w2:workers=2,protocol=v2,instances=2,ort_threads=1,preprocess_instances=1"],
               tmp_path, 900)
    labels = {"torch_eager"} | {f"{s}[{v}]" for s in ("triton_direct", "triton_endpoint", "triton_ensemble")
                                for v in ("default", "w2")}
    _check_rows(rep, labels, [1, 2])
    assert set(rep["overhead"]) == {"default", "w2"} and set(rep["overhead"]["w2"]) == {"1", "2"}
    assert len(rep["results"]["triton_endpoint[w2]"]["2"]["rounds_throughput_rps"]) == 2
    assert "count: 2 kind: KIND_CPU" in rep["variants"]["w2"]["config_pbtxt"]
    assert rep["variants"]["w2"]["tuning"]["workers"] == 2 and rep["versions"]["tritonserver"]
    # The ensemble answers as torch on every image, top-1 included.
    assert all(v == 1.0 for v in rep["answers_top1_agreement_vs_torch"].values()) and \
        set(rep["answers_top1_agreement_vs_torch"]) == {"triton_ensemble[default]", "triton_ensemble[w2]"}
    assert rep["machine"]["cpu_isa"]


def test_missing_images_skip_with_a_message(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serving.py"), "--images",
                          str(tmp_path / "nothing"), "--out", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and "SKIPPED: no JPEG images under" in out.stderr
    assert not (tmp_path / "r.json").exists()
