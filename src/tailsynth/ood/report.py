"""The human half of the selection report: score histograms and sample grids in one HTML page.

The machine half is the selection's quality record (`selection.RECORD_FILE`, written by select.py); this page
shows the same numbers plus pictures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..formatting import fmt
from ..pages import Markup, bold, esc, heading, image, page, para, table
from .scores import OOD_SCORES

GRID_MAX = 32  # samples per grid


def _histograms(sc, kept: np.ndarray, c: int, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figure registry stay untouched

    m = sc.cls_idx == c
    fig = Figure(figsize=(4 * len(OOD_SCORES), 3))
    axes = fig.subplots(1, len(OOD_SCORES))
    for ax, name in zip(axes, OOD_SCORES):
        groups = [("real val", sc.val_scores[name][sc.val_cls == c], "tab:blue"),
                  ("accepted", sc.scores[name][m & kept], "tab:green"),
                  ("rejected", sc.scores[name][m & ~kept], "tab:red")]
        vals = np.concatenate([g[1] for g in groups if len(g[1])])
        vals = vals[np.isfinite(vals)]
        if len(vals) == 0:
            ax.set_title(f"{name}: no values")
            continue
        lo, hi = np.quantile(vals, [0.0, 0.995])
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 30)
        for label, v, colour in groups:
            v = v[np.isfinite(v)]
            if len(v):
                ax.hist(np.clip(v, lo, hi), bins=bins, density=True, alpha=0.45, color=colour, label=f"{label} ({len(v)})")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _grid(images: np.ndarray, path: Path, cols: int = 8, scale: int = 2) -> bool:
    from PIL import Image

    if len(images) == 0:
        return False
    n = min(len(images), GRID_MAX)
    h, w = images.shape[1:3]
    rows = (n + cols - 1) // cols
    canvas = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        canvas[r * (h + 2) : r * (h + 2) + h, k * (w + 2) : k * (w + 2) + w] = images[i]
    img = Image.fromarray(canvas)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return True


def write_report(sc, kept: np.ndarray, quality: dict, out: Path, score: str = "mahalanobis") -> Path:
    from .scores import as_ood

    out = Path(out)
    fig_dir = out / "report_files"
    fig_dir.mkdir(parents=True, exist_ok=True)
    ood = as_ood(score, sc.scores[score])
    cols = ["n_candidates", "n_kept", "acceptance_rate", "fd", "fd_all_candidates", "fd_real_val", "kid",
            "kid_real_val", "precision", "recall", "memorization_rate", "exact_copies", "mean_p_intended_kept"]
    rows, sections = [], []
    for cname, entry in quality["per_class"].items():
        rows.append([cname, *(fmt(entry.get(k), 4, general=True) for k in cols)])
        c = sc.class_names.index(cname)
        m = sc.cls_idx == c
        hist = fig_dir / f"hist_{cname}.png"
        _histograms(sc, kept, c, hist)
        # Accepted: most in-distribution first; rejected: most out-of-distribution first.
        acc = np.flatnonzero(m & kept)
        acc = acc[np.argsort(ood[acc])]
        rej = np.flatnonzero(m & ~kept)
        rej = rej[np.argsort(-ood[rej])]
        sections += [heading(cname), image(f"report_files/{hist.name}", f"score histograms {cname}")]
        for label, idx in (("accepted", acc), ("rejected", rej)):
            g = fig_dir / f"grid_{cname}_{label}.png"
            if _grid(sc.images[idx], g):
                sections += [heading(f"{label} ({len(idx)}; first {min(len(idx), GRID_MAX)} shown)", 3),
                             image(f"report_files/{g.name}", f"{label} {cname}")]
            else:
                sections.append(heading(f"{label}: none", 3))
    sel, overall = quality.get("selection", {}), quality["overall"]
    path = out / "report.html"
    floor_rows, floor_note = _floor_table(quality.get("floor") or {})
    path.write_text(page(
        "tailsynth OOD selection report",
        para("Score used for selection: ", bold(str(sel.get("score"))),
             f"; gamma = {fmt(sel.get('gamma'), 4, general=True)}; calibration quantile = "
             f"{fmt(sel.get('calibrate'), 4, general=True)}. Candidates: {overall['n_candidates']}, kept: "
             f"{overall['n_kept']}, memorized: {fmt(overall['memorization_rate'], 4, general=True)} of all."),
        para(Markup(f"<i>{esc(quality.get('note', ''))}</i>")),
        table(["class", *cols], rows), heading("The floor under the rule"), para(floor_note),
        *([table(FLOOR_COLUMNS, floor_rows)] if floor_rows else []), *sections, h1="OOD post-selection report"))
    return path


FLOOR_COLUMNS = ["class", "generated", "passing the floor", "asked for", "kept", "out of distribution", "other class",
                 "off prototype", "memorized", "real held-out passing"]


def _floor_table(floor: dict) -> tuple[list[list], str]:
    """Per class: how many candidates passed the floor (ood.floor), what the rule asked for and kept, why the rest
    failed; and a sentence on the floor's settings (or that it was off)."""
    settings = floor.get("settings")
    if not settings:
        return [], "No floor: the rule ranked every candidate (select --no-floor)."
    rows = []
    for cname, e in (floor.get("per_class") or {}).items():
        rej = e.get("rejected") or {}
        rows.append([cname, e.get("generated"), e.get("passing_floor"), "" if e.get("asked") is None else e["asked"],
                     e.get("kept"), rej.get("out_of_distribution"), rej.get("other_class"), rej.get("off_prototype"),
                     rej.get("memorized"), fmt(e.get("real_pass_rate"), 2)])
    note = (f"A candidate is eligible only if its {settings['score']} score is within the {settings['quantile']:g} "
            f"quantile of its class's real held-out images, no other class has p >= {settings['confidence']:g}, it "
            f"lies within {settings['band_hi']:g}x the class's mean distance to its prototype, and it is not "
            f"memorized. Fewer passing than asked for means fewer kept.")
    return rows, note
