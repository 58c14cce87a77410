"""Report files for classifier evaluations: per-class CSV, markdown table, PNG plots (matplotlib figures, no pyplot)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..formatting import fmt


def per_class_rows(m: dict) -> list[dict]:
    return [{"class": c, **m["per_class"][c]} for c in m["classes"]]


def write_per_class_csv(m: dict, path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["class", "support", "recall", "precision", "f1", "auc"])
        w.writeheader()
        for r in per_class_rows(m):
            w.writerow({k: r[k] for k in w.fieldnames})
    return path


def markdown_table(m: dict) -> str:
    ci = m.get("ci95") or {}

    def with_ci(key: str) -> str:
        v = fmt(m.get(key))
        iv = ci.get(key)
        return f"{v} [{fmt(iv[0])}, {fmt(iv[1])}]" if iv and iv[0] is not None else v

    lines = [
        f"**split:** {m.get('split')} · **n:** {m.get('n')} · **model:** {m.get('model')}",
        "",
        "| metric | value (95% bootstrap CI) |" if ci else "| metric | value |",
        "|---|---|",
        f"| balanced accuracy | {with_ci('balanced_accuracy')} |",
        f"| accuracy | {with_ci('accuracy')} |",
        f"| macro AUC | {with_ci('macro_auc')} |",
        f"| macro F1 | {fmt(m.get('macro_f1'))} |",
        f"| ECE | {fmt(m.get('ece'))} |",
        "",
        "| class | support | recall | precision | F1 | AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rarest = m.get("rarest_class")
    pcr = ci.get("per_class_recall", {})
    for r in per_class_rows(m):
        name = f"**{r['class']}** (rarest)" if r["class"] == rarest else r["class"]
        rec = fmt(r["recall"])
        if pcr.get(r["class"]) and pcr[r["class"]][0] is not None:
            rec += f" [{fmt(pcr[r['class']][0])}, {fmt(pcr[r['class']][1])}]"
        lines.append(f"| {name} | {r['support']} | {rec} | {fmt(r['precision'])} | {fmt(r['f1'])} | {fmt(r['auc'])} |")
    return "\n".join(lines) + "\n"


def plot_confusion(m: dict, path: Path) -> Path:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figure registry stay untouched

    cm = np.asarray(m["confusion_matrix"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    k = len(m["classes"])
    fig = Figure(figsize=(1.0 + 0.7 * k, 0.8 + 0.6 * k), dpi=110)
    ax = fig.subplots()
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), m["classes"], rotation=45)
    ax.set_yticks(range(k), m["classes"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (row-normalised), {m.get('split')}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_recall_bars(m: dict, path: Path) -> Path:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figure registry stay untouched

    classes = m["classes"]
    rec = [m["per_class"][c]["recall"] or 0.0 for c in classes]
    sup = [m["per_class"][c]["support"] for c in classes]
    fig = Figure(figsize=(1.5 + 0.7 * len(classes), 3.2), dpi=110)
    ax = fig.subplots()
    bars = ax.bar(classes, rec, color=["#c0392b" if c == m.get("rarest_class") else "#2e86c1" for c in classes])
    pcr = (m.get("ci95") or {}).get("per_class_recall") or {}
    if pcr:
        lo = [r - (pcr[c][0] if pcr.get(c) and pcr[c][0] is not None else r) for c, r in zip(classes, rec)]
        hi = [(pcr[c][1] if pcr.get(c) and pcr[c][1] is not None else r) - r for c, r in zip(classes, rec)]
        ax.errorbar(classes, rec, yerr=[lo, hi], fmt="none", ecolor="black", capsize=3, lw=1)
    for b, s in zip(bars, sup):
        ax.text(b.get_x() + b.get_width() / 2, 0.02, f"n={s}", ha="center", fontsize=7, color="white")
    ba = m.get("balanced_accuracy")
    if ba is not None:
        ax.axhline(ba, ls="--", color="gray", lw=1, label=f"balanced acc {ba:.3f}")
        ax.legend(fontsize=7, loc="upper right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.set_title(f"per-class recall, {m.get('split')}")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_classifier_report(m: dict, out, plots: bool = True, prefix: str = "") -> dict:
    """per_class.csv, metrics.md, confusion_matrix.png, per_class_recall.png in OUT."""
    out = Path(out)
    files = {
        "per_class_csv": write_per_class_csv(m, out / f"{prefix}per_class.csv"),
        "markdown": out / f"{prefix}metrics.md",
    }
    files["markdown"].write_text(markdown_table(m))
    if plots:
        files["confusion_png"] = plot_confusion(m, out / f"{prefix}confusion_matrix.png")
        files["recall_png"] = plot_recall_bars(m, out / f"{prefix}per_class_recall.png")
    return files
