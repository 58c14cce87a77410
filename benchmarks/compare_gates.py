"""Are two synth-quality runs of the same synthesizer equal at the gates? (a faster runtime or precision vs fp32)

Applies the rule pre-registered in docs/results/performance/synthesis_bf16_plan.md to two `synth-quality` output
folders made with the same seeds, backgrounds and gate classifier (REFERENCE, e.g. fp32; CANDIDATE, e.g. bf16):
for every mode and class
  1. label fidelity: paired (same candidate id) mean difference CANDIDATE - REFERENCE in p(intended), 95% bootstrap
     interval lower bound >= -FIDELITY_MARGIN;
  2. no gate that passes in REFERENCE fails in CANDIDATE;
  3. train-on-synthetic recall >= REFERENCE minus one validation image of the class;
  4. FD (synthetic vs real train) <= FD_FACTOR x REFERENCE;
  5. memorized candidates <= REFERENCE.

  .venv/bin/python benchmarks/compare_gates.py runs/gates14_fp32 runs/gates14_bf16 \\
      --out docs/results/performance/synthesis_bf16_gates.json --out-md docs/results/performance/synthesis_bf16_gates.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tailsynth.errors import TailsynthError
from tailsynth.ood.gates import gate_scores_path, paired_fidelity, read_gates, read_scores

FIDELITY_MARGIN = 0.02
FD_FACTOR = 1.10


def load(folder: Path) -> dict:
    try:
        return read_gates(folder)
    except TailsynthError as e:
        raise SystemExit(str(e)) from None


def compare(ref_dir: Path, cand_dir: Path) -> dict:
    ref, cand = load(ref_dir), load(cand_dir)
    for key in ("sampler", "steps", "guidance", "strength", "seed", "gate_seeds", "classes"):
        if ref["config"].get(key) != cand["config"].get(key):
            raise SystemExit(f"{key} differs: {ref['config'].get(key)} vs {cand['config'].get(key)}; the rule "
                             "compares runs that differ only in how the UNet runs")
    rows, all_ok = [], True
    for mode in ref["gates"]:
        if mode not in cand["gates"]:
            raise SystemExit(f"{cand_dir}: mode {mode} missing")
        sa, sb = read_scores(gate_scores_path(ref_dir, mode)), read_scores(gate_scores_path(cand_dir, mode))
        for cls, g in ref["gates"][mode].items():
            h = cand["gates"][mode][cls]
            pf = paired_fidelity(sa, sb, cls)
            n_val = int(g["n"])
            checks = {
                "fidelity": pf["ci95"][0] >= -FIDELITY_MARGIN,
                "verdicts": all(h.get(k) or not g.get(k) for k in ("label_fidelity_pass", "tos_pass")),
                "tos": h.get("tos_recall", 0.0) >= g.get("tos_recall", 0.0) - 1.0 / n_val - 1e-9,
                "fd": h["fd_synthetic"] <= FD_FACTOR * g["fd_synthetic"],
                "memorized": h["n_memorized"] <= g["n_memorized"],
            }
            ok = all(checks.values())
            all_ok &= ok
            rows.append({"mode": mode, "class": cls, "n_val": n_val, **{f"fidelity_{k}": v for k, v in pf.items()},
                         "label_fidelity": [g["label_fidelity"], h["label_fidelity"]],
                         "label_fidelity_pass": [g["label_fidelity_pass"], h["label_fidelity_pass"]],
                         "tos_recall": [g.get("tos_recall"), h.get("tos_recall")],
                         "tos_pass": [g.get("tos_pass"), h.get("tos_pass")],
                         "fd_synthetic": [g["fd_synthetic"], h["fd_synthetic"]],
                         "n_memorized": [g["n_memorized"], h["n_memorized"]], "checks": checks, "equal": ok})
    return {"reference": str(ref_dir), "candidate": str(cand_dir),
            "reference_config": {k: ref["config"].get(k) for k in ("runtime", "precision")},
            "candidate_config": {k: cand["config"].get(k) for k in ("runtime", "precision")},
            "rule": {"fidelity_margin": FIDELITY_MARGIN, "fd_factor": FD_FACTOR, "tos_slack": "one val image"},
            "rows": rows, "equal_or_better": all_ok,
            "wall_s": [ref.get("wall_s"), cand.get("wall_s")]}


def markdown(r: dict) -> str:
    def pair(v, fmt="{:.3f}"):
        return " / ".join("–" if x is None else (("pass" if x else "FAIL") if isinstance(x, bool) else fmt.format(x))
                          for x in v)

    lines = [f"reference {r['reference']} {r['reference_config']}; candidate {r['candidate']} "
             f"{r['candidate_config']}", "",
             "| mode | class | Δ p(intended), 95% CI | label fidelity ref / cand | TOS recall ref / cand | "
             "TOS gate | FD ref / cand | memorized | equal? |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        failed = [k for k, v in x["checks"].items() if not v]
        lines.append(f"| {x['mode']} | {x['class']} | {x['fidelity_mean_diff']:+.4f} [{x['fidelity_ci95'][0]:+.4f}, "
                     f"{x['fidelity_ci95'][1]:+.4f}] (n={x['fidelity_n_paired']}) | {pair(x['label_fidelity'])} | "
                     f"{pair(x['tos_recall'])} | {pair(x['tos_pass'])} | {pair(x['fd_synthetic'], '{:.1f}')} | "
                     f"{pair(x['n_memorized'], '{:d}')} | {'yes' if x['equal'] else 'NO: ' + ', '.join(failed)} |")
    lines += ["", f"**Equal or better at the gates: {'yes' if r['equal_or_better'] else 'no'}**"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", type=Path)
    p.add_argument("candidate", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--out-md", type=Path)
    a = p.parse_args(argv)
    r = compare(a.reference, a.candidate)
    md = markdown(r)
    print(md)
    if a.out:
        a.out.write_text(json.dumps(r, indent=2) + "\n")
    if a.out_md:
        a.out_md.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
