"""The markdown tables of an experiment's results: per arm, per class, the contrasts and the decision."""

from __future__ import annotations

import json

from ..data.classes import TAIL_CLASSES
from .arms import ARM_LABELS


def _ms(s: dict | None, d: int = 3) -> str:
    if not s or s.get("mean") is None:
        return "–"
    if s["n"] > 1:
        return f"{s['mean']:.{d}f} ± {s['std']:.{d}f}"
    return f"{s['mean']:.{d}f}"


def _delta(c: dict | None, metric: str, d: int = 3) -> str:
    if not c or not c.get("n_replicates"):
        return "–"
    b = c["bootstrap"][metric]
    if b["delta"] is None:
        return "–"
    lo, hi = b["ci95"]
    return f"{b['delta']:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]" if lo is not None else f"{b['delta']:+.{d}f}"


def _verdict(arm: str, v: dict) -> str:
    control = ARM_LABELS.get(v["control"], v["control"]).split(" ")[0]  # "(c)" or "(g0)"
    return (f"{ARM_LABELS.get(arm, arm)}: **{v['verdict']}** (beats {control}: {v['beats_control']}, "
            f"beats CMO: {v['beats_cmo']}, tail gain: {v['tail_recall_gain']})")


def render_markdown(results: dict, ref_label: str = "(a)") -> str:
    cfg = results.get("config", {})
    tail = cfg.get("tail") or list(TAIL_CLASSES)
    lines = []
    for part, e in results["parts"].items():
        title = ("held-out folds" if cfg.get("folds") else "source val split") if part == "test" else \
            f"other source: {cfg.get('eval_data')} ({cfg.get('eval_split')})"
        lines += [f"## {title}", ""]
        if not e.get("arms"):
            lines += ["(no finished runs)", ""]
            continue
        if e.get("dropped_classes"):
            lines += [f"Images of classes the models lack were left out: {e['dropped_classes']}.", ""]
        lines += [("Per arm: mean ± std over replicates. Δ vs (a): paired, mean over replicates, 95% bootstrap "
                   "interval over image sets, seeds and images; McNemar p: largest over the tests (one per seed, or "
                   "per model on a shared evaluation set)."), "",
                  (f"| arm | n | balanced accuracy | Δ vs {ref_label} | tail recall ({'+'.join(tail)}) | Δ tail recall | "
                   "macro AUC | log-loss | McNemar p |"), "|---|---|---|---|---|---|---|---|---|"]
        for k, t in e["arms"].items():
            c = e["vs_real"].get(k)
            p = f"{c['mcnemar_p_max']:.3g}" if c and c.get("n_replicates") else "–"
            lines.append(f"| {ARM_LABELS.get(k, k)} | {t['balanced_accuracy']['n']} | {_ms(t['balanced_accuracy'])} | "
                         f"{_delta(c, 'balanced_accuracy')} | {_ms(t['tail_recall'])} | {_delta(c, 'tail_recall')} | "
                         f"{_ms(t['macro_auc'])} | {_ms(t['log_loss'])} | {p} |")
        classes = e["classes"]
        lines += ["", "Per-class recall (mean ± std; support per image set in brackets):", "",
                  "| arm | " + " | ".join(f"{c} ({e['support'][c]})" for c in classes) + " |",
                  "|---|" + "---|" * len(classes)]
        for k, t in e["arms"].items():
            lines.append(f"| {ARM_LABELS.get(k, k)} | " + " | ".join(_ms(t["per_class_recall"][c]) for c in classes)
                         + " |")
        if e["contrasts"]:
            lines += ["", "Contrasts named by the decision rule (Δ balanced accuracy, Δ tail recall, McNemar p):", "",
                      "| contrast | Δ balanced accuracy | Δ tail recall | McNemar p |", "|---|---|---|---|"]
            for name, c in e["contrasts"].items():
                p = f"{c['mcnemar_p_max']:.3g}" if c.get("n_replicates") else "–"
                lines.append(f"| {name} | {_delta(c, 'balanced_accuracy')} | {_delta(c, 'tail_recall')} | {p} |")
        if e.get("decision"):
            lines += ["", "Decision (rule fixed before the run): " + "; ".join(
                _verdict(a, v) for a, v in e["decision"].items())]
        lines.append("")
    lines += ["Config: `" + json.dumps({k: cfg[k] for k in sorted(cfg)}, default=str) + "`", ""]
    return "\n".join(lines)
