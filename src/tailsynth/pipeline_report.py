"""The final report of a train_augment run: comparison table, per-class plots, synthetic grids, selection
statistics and the data revision, as markdown and HTML side by side with comparison.csv.

Inputs are the files the pipeline stages write (no KFP here):
- evaluation folders holding `evaluation.json` (the metrics dict of `evaluate_model` plus `arm`),
- the selection folder of `select_candidates` (`quality.json`, `selected_manifest.csv`),
- the version record JSON of the version stage.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data.errors import DataError

EVALUATION_FILE = "evaluation.json"


def read_evaluation(folder: str | Path) -> dict:
    p = Path(folder)
    p = p / EVALUATION_FILE if p.is_dir() else p
    if not p.is_file():
        raise DataError(f"{p}: evaluation not found (expected {EVALUATION_FILE} from the evaluate stage)")
    ev = json.loads(p.read_text())
    for key in ("arm", "balanced_accuracy", "per_class"):
        if key not in ev:
            raise DataError(f"{p}: missing field {key!r}")
    return ev


def comparison_rows(evaluations: Sequence[str | Path | dict]) -> list[dict]:
    """One row per arm: method, balanced_accuracy, recall_<CLASS> for every class (in the first arm's order)."""
    evs = [e if isinstance(e, dict) else read_evaluation(e) for e in evaluations]
    if not evs:
        raise ValueError("no evaluations to compare")
    classes = list(evs[0].get("classes") or evs[0]["per_class"].keys())
    rows = []
    for ev in evs:
        row = {"method": ev["arm"], "balanced_accuracy": _num(ev["balanced_accuracy"])}
        for c in classes:
            row[f"recall_{c}"] = _num((ev["per_class"].get(c) or {}).get("recall"))
        rows.append(row)
    return rows


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def write_comparison_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def read_comparison_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (v if k == "method" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


# ---- figures -----------------------------------------------------------------------------------------------
def plot_per_class(rows: list[dict], out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [k[len("recall_"):] for k in rows[0] if k.startswith("recall_")]
    x = np.arange(len(classes))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(classes), 3.2))
    for i, r in enumerate(rows):
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [r[f"recall_{c}"] for c in classes], width,
               label=f"{r['method']} (BA {r['balanced_accuracy']:.3f})")
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall (val)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def _manifest_images(manifest: Path) -> dict[str, list[Path]]:
    by_class: dict[str, list[Path]] = {}
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            p = Path(row["path"])
            by_class.setdefault(row["class"], []).append(p if p.is_absolute() else manifest.parent / p)
    return by_class


def rejected_images(candidates: Path, kept: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Candidates (a generate/merge folder: manifest.csv `id,class,...` + images/<id>.png) that selection dropped.

    Kept files are named `<n>_<id>.png` once the selection travels with its images (pipeline_io.localize_manifest).
    """
    kept_ids = {p.stem.split("_", 1)[1] if p.stem[:6].isdigit() else p.stem for ps in kept.values() for p in ps}
    out: dict[str, list[Path]] = {}
    manifest = Path(candidates) / "manifest.csv"
    if not manifest.is_file():
        return out
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            if row["id"] not in kept_ids:
                out.setdefault(row["class"], []).append(Path(candidates) / "images" / f"{row['id']}.png")
    return out


def synthetic_grid(manifest: Path | dict, out_png: Path, per_class: int = 8, tile: int = 48) -> tuple[Path | None, dict]:
    """A grid with one row per class of synthetic images (a manifest CSV or {class: paths});
    returns (png or None, counts per class)."""
    from PIL import Image, ImageDraw

    by_class = manifest if isinstance(manifest, dict) else _manifest_images(manifest)
    counts = {c: len(v) for c, v in by_class.items()}
    if not by_class:
        return None, counts
    label_w = 56
    grid = Image.new("RGB", (label_w + per_class * tile, len(by_class) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (cls, paths) in enumerate(sorted(by_class.items())):
        draw.text((4, r * tile + tile // 2 - 6), cls, fill=(0, 0, 0))
        for c, p in enumerate(paths[:per_class]):
            with Image.open(p) as im:
                grid.paste(im.convert("RGB").resize((tile, tile), Image.NEAREST), (label_w + c * tile, r * tile))
    grid.save(out_png)
    return out_png, counts


# ---- report ------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def selection_table(quality: dict) -> tuple[list[str], list[list]]:
    header = ["class", "candidates", "kept", "acceptance"]
    rows = []
    for cls, q in sorted((quality.get("per_class") or {}).items()):
        n, k = q.get("n_candidates", 0), q.get("n_kept", 0)
        rows.append([cls, n, k, (k / n) if n else float("nan")])
    ov = quality.get("overall") or {}
    if ov:
        rows.append(["all", ov.get("n_candidates", 0), ov.get("n_kept", 0), _num(ov.get("acceptance_rate"))])
    return header, rows


def diffusion_rows(model_dir: str | Path) -> list[list]:
    """Which synthesizer made the synthetic data: shipped or trained here, its weight hash, its training and its
    quality-gate figures; says so plainly when training stopped early (time cap)."""
    from .diffusion.model import model_hash, read_card

    meta_path = Path(model_dir) / "tailsynth_diffusion.json"
    if not meta_path.is_file():
        return []
    meta = json.loads(meta_path.read_text())
    card = read_card(model_dir)
    step, planned = meta.get("step"), meta.get("steps_planned")
    try:
        weights = model_hash(model_dir)
    except FileNotFoundError:
        weights = "missing"
    origin = (f"shipped: {card.get('name', '')} ({meta.get('pretrained_from')})" if meta.get("pretrained_from")
              else "trained in this run")
    rows = [["synthesizer", origin], ["weights hash (sha256, 12)", weights], ["size", meta.get("size", "")],
            ["resolution", meta.get("resolution", "")], ["training steps done / planned", f"{step} / {planned}"]]
    if card.get("images_seen"):
        rows.append(["images seen in training", card["images_seen"]])
    if isinstance(step, int) and isinstance(planned, int) and step < planned:
        rows.append(["note", "training stopped before the planned steps (time cap): expect poor synthetic images"])
    for mode, per_class in (card.get("gates") or {}).items():
        for cls, g in sorted(per_class.items()):
            rows.append([f"gate {mode} {cls}: label fidelity / real",
                         f"{_fmt(g.get('label_fidelity'))} / {_fmt(g.get('label_fidelity_real'))}"
                         f" ({'pass' if g.get('label_fidelity_pass') else 'FAIL'})"])
            rows.append([f"gate {mode} {cls}: train-on-synthetic recall / real-trained",
                         f"{_fmt(g.get('tos_recall'))} / {_fmt(g.get('real_recall'))}"
                         f" ({'pass' if g.get('tos_pass') else 'FAIL'})"])
    return rows


def build_report(out: str | Path, comparison_csv: str | Path, evaluations: Sequence[str | Path] = (),
                 candidates: str | Path | None = None, selected: str | Path | None = None,
                 version_record: str | Path | None = None, data_revision: str = "", profile: str = "",
                 diffusion_model: str | Path | None = None, extra: dict | None = None) -> Path:
    """Write OUT/report.md, OUT/report.html, OUT/comparison.csv and the figures; returns OUT."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_comparison_csv(comparison_csv)
    write_comparison_csv(rows, out / "comparison.csv")
    plot_per_class(rows, out / "per_class_recall.png")
    header = list(rows[0])
    table = [[r[h] for h in header] for r in rows]

    quality, grid, rejected_grid = {}, None, None
    if selected:
        qpath = Path(selected) / "quality.json"
        quality = json.loads(qpath.read_text()) if qpath.is_file() else {}
        manifest = Path(selected) / "selected_manifest.csv"
        if manifest.is_file():
            grid, _ = synthetic_grid(manifest, out / "synthetic_grid.png")
            if candidates:
                dropped = rejected_images(Path(candidates), _manifest_images(manifest))
                if dropped:
                    rejected_grid, _ = synthetic_grid(dropped, out / "rejected_grid.png")
    record = json.loads(Path(version_record).read_text()) if version_record and Path(version_record).is_file() else {}
    revision = {"real data revision (pipeline parameter)": data_revision or record.get("real_data_revision", ""),
                "real data content hash (staged bytes)": record.get("real_content_hash", ""),
                "synthetic set DVC revision": record.get("synthetic_revision", ""),
                "DVC remote": record.get("remote") or "none"}
    evs = [read_evaluation(e) for e in evaluations]
    support = {}
    if evs:
        support = {c: (v or {}).get("support") for c, v in evs[0]["per_class"].items()}
    sel_header, sel_rows = selection_table(quality)
    base, aug = rows[0], rows[-1]
    delta = aug["balanced_accuracy"] - base["balanced_accuracy"]
    split_name = (evs[0].get("split") if evs else None) or "val"
    summary = (f"Balanced accuracy ({split_name}): {base['method']} {_fmt(base['balanced_accuracy'])} -> "
               f"{aug['method']} {_fmt(aug['balanced_accuracy'])} ({delta:+.3f}).")
    if split_name == "val":
        summary += (" Both arms also chose their epoch on this split, so absolute values are optimistic;"
                    " compare the arms with each other.")

    md = [f"# tailsynth train_augment report{f' (profile {profile})' if profile else ''}", "",
          summary, "", f"## Comparison ({split_name} split)", "", _md_table(header, table), "",
          "![per-class recall](per_class_recall.png)", ""]
    if support:
        md += ["Validation support per class: " + ", ".join(f"{c} {n}" for c, n in support.items()), ""]
    md += ["## Synthetic tail samples (kept after OOD selection)", ""]
    md += (["![synthetic grid](synthetic_grid.png)", ""] if grid else ["No synthetic image was kept.", ""])
    if rejected_grid:
        md += ["Candidates dropped by the selection:", "", "![rejected candidates](rejected_grid.png)", ""]
    md += ["## Selection statistics", "", _md_table(sel_header, sel_rows) if sel_rows else "No selection statistics.",
           "", f"Selection settings: `{json.dumps(quality.get('selection', {}), default=str)}`", "",
           "## Data revision", "", _md_table(["item", "value"], [[k, v] for k, v in revision.items()]), ""]
    models = diffusion_rows(diffusion_model) if diffusion_model else []
    if models:
        md += ["## Diffusion model", "", _md_table(["item", "value"], models), ""]
    if extra:
        md += ["## Run", "", _md_table(["item", "value"], [[k, v] for k, v in extra.items()]), ""]
    (out / "report.md").write_text("\n".join(md))

    css = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}")
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>tailsynth report</title><style>{css}</style>"
    h = [head + "</head><body>",
         f"<h1>tailsynth train_augment report{html.escape(f' (profile {profile})' if profile else '')}</h1>",
         f"<p>{html.escape(summary)}</p>", f"<h2>Comparison ({split_name} split)</h2>",
         _html_table(header, table), "<p><img src='per_class_recall.png' alt='per-class recall'></p>",
         "<h2>Synthetic tail samples (kept after OOD selection)</h2>",
         "<p><img src='synthetic_grid.png' alt='synthetic grid'></p>" if grid else "<p>No synthetic image was kept.</p>",
         "<p>Candidates dropped by the selection:</p><p><img src='rejected_grid.png' alt='rejected candidates'></p>"
         if rejected_grid else "",
         "<h2>Selection statistics</h2>", _html_table(sel_header, sel_rows) if sel_rows else "<p>none</p>",
         "<h2>Data revision</h2>", _html_table(["item", "value"], [[k, v] for k, v in revision.items()])]
    if models:
        h += ["<h2>Diffusion model</h2>", _html_table(["item", "value"], models)]
    if extra:
        h += ["<h2>Run</h2>", _html_table(["item", "value"], [[k, v] for k, v in extra.items()])]
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h))
    return out
