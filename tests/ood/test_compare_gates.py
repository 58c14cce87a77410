"""benchmarks/compare_gates.py applies the pre-registered equal-gates rule to two synth-quality folders."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("compare_gates", ROOT / "benchmarks" / "compare_gates.py")
cg = importlib.util.module_from_spec(_spec)
sys.modules["compare_gates"] = cg
_spec.loader.exec_module(cg)


def gate_folder(path: Path, p: np.ndarray, tos: float, fd: float, precision: str, memorized: int = 0) -> Path:
    """A synth-quality folder for one mode and class: quality.json and scores.csv."""
    (path / "inpaint").mkdir(parents=True)
    ids = [f"syn_DF_s0_{i:05d}" for i in range(len(p))]
    (path / "inpaint" / "scores.csv").write_text("id,class,p_intended\n" + "".join(
        f"{i},DF,{v:.6f}\n" for i, v in zip(ids, p)))
    g = {"label_fidelity": float(p.mean()), "label_fidelity_pass": bool(p.mean() >= 0.8 * 0.3), "n": 12,
         "tos_recall": tos, "tos_pass": tos >= 0.7 * 0.333, "fd_synthetic": fd, "n_memorized": memorized}
    cfg = {"sampler": "dpmsolver", "steps": 20, "guidance": 3.0, "strength": 0.5, "seed": 0, "gate_seeds": [0, 1, 2],
           "classes": ["DF"], "runtime": "eager", "precision": precision}
    (path / "quality.json").write_text(json.dumps({"config": cfg, "gates": {"inpaint": {"DF": g}}, "wall_s": 1.0}))
    return path


@pytest.fixture
def ref(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 0.6, 80)
    return p, gate_folder(tmp_path / "fp32", p, tos=0.5, fd=24.0, precision="fp32")


def test_equal_runs_pass_and_each_failure_is_named(tmp_path, ref):
    p, ref_dir = ref
    rng = np.random.default_rng(1)
    same = gate_folder(tmp_path / "bf16", p + rng.normal(0, 0.002, len(p)), 0.5 - 1 / 12, 25.0, "bf16")
    r = cg.compare(ref_dir, same)
    assert r["equal_or_better"] and r["rows"][0]["checks"] == dict.fromkeys(
        ("fidelity", "verdicts", "tos", "fd", "memorized"), True)
    assert "Equal or better at the gates: yes" in cg.markdown(r)

    cases = {"fidelity": {"p": p - 0.05}, "tos": {"tos": 0.5 - 2 / 12}, "verdicts": {"tos": 0.2},
             "fd": {"fd": 24.0 * 1.2}, "memorized": {"memorized": 1}}
    for name, change in cases.items():
        kw = {"p": p, "tos": 0.5, "fd": 24.0, "precision": "bf16", **change}
        r = cg.compare(ref_dir, gate_folder(tmp_path / f"bad_{name}", **kw))
        failed = [k for k, v in r["rows"][0]["checks"].items() if not v]
        assert not r["equal_or_better"] and name in failed, (name, failed)
        assert "NO: " in cg.markdown(r) and name in cg.markdown(r).split("NO: ")[1]


def test_runs_with_different_sampling_are_not_compared(tmp_path, ref):
    _, ref_dir = ref
    other = gate_folder(tmp_path / "other", np.full(80, 0.3), 0.5, 24.0, "bf16")
    q = json.loads((other / "quality.json").read_text())
    q["config"]["steps"] = 10
    (other / "quality.json").write_text(json.dumps(q))
    with pytest.raises(SystemExit, match="steps"):
        cg.compare(ref_dir, other)
