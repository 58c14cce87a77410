"""serving/loadtest.py end to end at a tiny size: every system answers, the table has ratios vs torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_loadtest_smoke(tiny_model, local_repo, isic_sample, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "serving" / "loadtest.py"), "--model", str(tiny_model),
                          "--repo", str(local_repo), "--requests", "12", "--concurrency", "1", "3",
                          "--images", str(isic_sample), "--systems", "torch_eager", "onnxruntime",
                          "onnxruntime_endpoint", "--out-json", str(tmp_path / "r.json"),
                          "--out-md", str(tmp_path / "r.md")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep["results"]) == {"torch_eager", "onnxruntime", "onnxruntime_endpoint"}
    for rows in rep["results"].values():
        assert set(rows) == {"1", "3"}
        for row in rows.values():
            assert row["requests"] == 12 and row["throughput_rps"] > 0
            assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
            assert row["throughput_vs_torch"] > 0
    assert rep["results"]["torch_eager"]["3"]["throughput_vs_torch"] == 1.0
    assert "| onnxruntime_endpoint | 3 |" in (tmp_path / "r.md").read_text()
