"""The final report of a train_augment run: comparison table, per-class plots, synthetic grids, selection
statistics and the data revision, as markdown and HTML side by side with comparison.csv.

Inputs are the files the pipeline stages write (no KFP here):
- evaluation folders of the evaluate stage (`classify.folders.Evaluation`: the metrics of `evaluate_model` plus `arm`),
- the selection folder of `select_candidates` (`ood.selection.Selection`: its record and kept set),
- the version record JSON of the version stage.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classify.folders import Evaluation
from .data.errors import DataError
from .cards import CARD_JSON, CARD_MD, read_card
from .diffusion.candidate_set import CandidateSet
from .errors import ConfigError
from .formatting import fmt
from .ood.selection import Selection
from .pages import Section, sections_html, sections_markdown

COMPARISON_FILE = "comparison.csv"  # the arms table: method, balanced_accuracy, recall_<class>...
REPORT_FILES = ("report.md", "report.html", COMPARISON_FILE)  # what a run folder shows at its top
read_evaluation = Evaluation.read  # an evaluate stage's folder (or its record), checked


def comparison_rows(evaluations: Sequence[str | Path | dict]) -> list[dict]:
    """One row per arm: method, balanced_accuracy, recall_<CLASS> for every class (in the first arm's order)."""
    evs = [e if isinstance(e, dict) else read_evaluation(e) for e in evaluations]
    if not evs:
        raise ConfigError("no evaluations to compare")
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


def write_serving(decision: dict, path: str | Path) -> Path:
    """The export rule's decision (`evaluation.promotion.decide_serving`) as JSON, for the report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(decision, indent=2))
    return path


def _serving_sections(serving) -> list[Section]:
    if not (serving and Path(serving).is_file()):
        return []
    d = json.loads(Path(serving).read_text())
    return [("Served model", "text", [f"**{d['served']}** is exported for serving ({d['rule']} rule): {d['reason']}."])]


def read_comparison_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (v if k == "method" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


# ---- intervals ----------------------------------------------------------------------------------------------
def arm_intervals(ev: dict) -> dict:
    """{"balanced_accuracy": [lo, hi], "recall_<CLASS>": [lo, hi]}: the evaluation's bootstrap (over images) 95%
    intervals, empty when it was run without a bootstrap."""
    ci = ev.get("ci95") or {}
    out = {}
    if ci.get("balanced_accuracy") and ci["balanced_accuracy"][0] is not None:
        out["balanced_accuracy"] = ci["balanced_accuracy"]
    for c, iv in (ci.get("per_class_recall") or {}).items():
        if iv and iv[0] is not None:
            out[f"recall_{c}"] = iv
    return out


def _cell(v, iv) -> str:
    return f"{fmt(v)} [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else fmt(v)


# ---- figures -----------------------------------------------------------------------------------------------
def plot_per_class(rows: list[dict], out_png: Path, intervals: Sequence[dict] | None = None) -> Path:
    recall_figure(rows, intervals).savefig(out_png, dpi=110, bbox_inches="tight")
    return out_png


def recall_figure(rows: list[dict], intervals: Sequence[dict] | None = None):
    """Grouped recall bars per class with 95% bootstrap error bars; the legend sits below the axes so it never
    covers a bar (a head class such as NV has recall near 1, right where an in-axes legend goes)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figure registry stay untouched

    classes = [k[len("recall_"):] for k in rows[0] if k.startswith("recall_")]
    x = np.arange(len(classes))
    width = 0.8 / len(rows)
    fig = Figure(figsize=(1.4 + 0.95 * len(classes), 3.8))
    ax = fig.subplots()
    for i, r in enumerate(rows):
        vals = np.array([r[f"recall_{c}"] for c in classes], dtype=float)
        ivs = (intervals[i] if intervals and i < len(intervals) else {}) or {}
        err = None
        if any(f"recall_{c}" in ivs for c in classes):
            lo = np.array([ivs.get(f"recall_{c}", [v, v])[0] for c, v in zip(classes, vals)], dtype=float)
            hi = np.array([ivs.get(f"recall_{c}", [v, v])[1] for c, v in zip(classes, vals)], dtype=float)
            err = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
        ba_iv = ivs.get("balanced_accuracy")
        label = f"{r['method']} (BA {r['balanced_accuracy']:.3f}" + (
            f" [{ba_iv[0]:.3f}, {ba_iv[1]:.3f}])" if ba_iv else ")")
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=label,
               error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(len(rows), 2), frameon=False)
    fig.tight_layout()
    return fig


def _manifest_images(manifest: Path) -> dict[str, list[Path]]:
    by_class: dict[str, list[Path]] = {}
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            p = Path(row["path"])
            by_class.setdefault(row["class"], []).append(p if p.is_absolute() else manifest.parent / p)
    return by_class


def rejected_images(candidates: Path, kept: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Candidates (a generate/merge folder, `diffusion.candidate_set`) that selection dropped.

    Kept files are named `<n>_<id>.png` once the selection travels with its images (pipeline_io.localize_manifest).
    """
    kept_ids = {p.stem.split("_", 1)[1] if p.stem[:6].isdigit() else p.stem for ps in kept.values() for p in ps}
    out: dict[str, list[Path]] = {}
    cs = CandidateSet(candidates)
    if not cs.manifest_path.is_file():
        return out
    for row in cs.read():
        if row.id not in kept_ids:
            out.setdefault(row.cls, []).append(cs.image_path(row.id))
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


_SHORT_REASON = {"out_of_distribution": "OOD", "other_class": "other", "off_prototype": "proto", "memorized": "copy"}


def _candidate_id(path: Path) -> str:
    """A candidate's id from its image: `<id>.png` in a candidate set, `<n>_<id>.png` once a selection carries it."""
    return path.stem.split("_", 1)[1] if path.stem[:6].isdigit() and "_" in path.stem else path.stem


def _caption(row: dict | None, kept: bool) -> str:
    """p(intended) and, for a dropped candidate, the floor tests it failed ('rank': it passed the floor and the rule
    chose others)."""
    if row is None:
        return ""
    p = f"p {float(row['p_intended']):.2f}"
    if kept:
        return p
    failed = [_SHORT_REASON.get(r, r) for r in (row.get("floor") or "").split("+") if r]
    return f"{p} {'+'.join(failed) or 'rank'}"


def selection_grid(kept: dict[str, list[Path]], dropped: dict[str, list[Path]], scores: dict[str, dict], out_png: Path,
                   per_side: int = 6, tile: int = 48) -> Path | None:
    """Per class, kept candidates (green frame) beside dropped ones (red frame), each captioned with its scores."""
    from PIL import Image, ImageDraw

    classes = sorted(set(kept) | set(dropped))
    if not classes:
        return None
    label_w, cap, gap = 56, 12, 16
    row_h = tile + cap + 4
    width = label_w + 2 * per_side * (tile + 2) + gap
    grid = Image.new("RGB", (width, 14 + len(classes) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    draw.text((label_w, 1), "kept", fill=(0, 110, 0))
    draw.text((label_w + per_side * (tile + 2) + gap, 1), "dropped (p(intended), failed tests)", fill=(160, 0, 0))
    for r, cls in enumerate(classes):
        y = 14 + r * row_h
        draw.text((4, y + tile // 2 - 6), cls, fill=(0, 0, 0))
        for side, (paths, colour) in enumerate(((kept.get(cls, []), (0, 150, 0)), (dropped.get(cls, []), (200, 0, 0)))):
            x0 = label_w + side * (per_side * (tile + 2) + gap)
            for i, p in enumerate(paths[:per_side]):
                x = x0 + i * (tile + 2)
                with Image.open(p) as im:
                    grid.paste(im.convert("RGB").resize((tile - 2, tile - 2), Image.NEAREST), (x + 1, y + 1))
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], outline=colour)
                draw.text((x, y + tile + 1), _caption(scores.get(_candidate_id(p)), side == 0), fill=(0, 0, 0))
    grid.save(out_png)
    return out_png


def _scores_by_id(selected: Path) -> dict[str, dict]:
    path = Selection(selected).scores_path
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


# ---- report ------------------------------------------------------------------------------------------------
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


SELECTION_GRID = "selection_grid.png"  # kept beside dropped candidates, with their scores

ACCOUNTING_HEADER = ["arm", "class", "synthesizer gate", "requested", "generated", "passing the floor", "asked for",
                     "kept", "rejected by the floor", "real held-out passing"]


def candidate_accounting(arm: str, quality: dict) -> tuple[list[list], list[str]]:
    """Per class of one synthetic arm's selection record: the gate's verdict, requested vs generated vs passing the
    floor vs asked for by the rule vs kept, and why the floor rejected the rest; plus the gate's lines."""
    from .ood.synth_gate import gate_lines

    gate = quality.get("gate") or {}
    floor = (quality.get("floor") or {}).get("per_class") or {}
    rows = []
    for cls in sorted(set(floor) | set(gate.get("classes") or [])):
        e, g = floor.get(cls, {}), (gate.get("per_class") or {}).get(cls)
        verdict = ("off" if gate.get("policy") == "off" else "pass" if g and g.get("passed") else
                   "FAIL: " + ", ".join(g.get("failed", [])) if g else "not probed")
        rej = e.get("rejected") or {}
        rows.append([arm, cls, verdict, e.get("requested", ""), e.get("generated", 0), e.get("passing_floor", 0),
                     "" if e.get("asked") is None else e["asked"], e.get("kept", 0),
                     ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in rej.items() if v) or "",
                     "" if e.get("real_pass_rate") is None else f"{e['real_pass_rate']:.2f}"])
    return rows, gate_lines(gate) if gate.get("per_class") else []


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
    for mode, per_class in ((card.get("metrics") or {}).get("gates") or {}).items():
        for cls, g in sorted(per_class.items()):
            rows.append([f"gate {mode} {cls}: label fidelity / real",
                         f"{fmt(g.get('label_fidelity'))} / {fmt(g.get('label_fidelity_real'))}"
                         f" ({'pass' if g.get('label_fidelity_pass') else 'FAIL'})"])
            rows.append([f"gate {mode} {cls}: train-on-synthetic recall / real-trained",
                         f"{fmt(g.get('tos_recall'))} / {fmt(g.get('real_recall'))}"
                         f" ({'pass' if g.get('tos_pass') else 'FAIL'})"])
    return rows


INPUTS_FILE = "report_inputs.json"  # what the report was built from, so the run folder can rebuild it
VERSION_RECORD = "version_record.json"
SELECTION_DIR = "selection"
MODEL_DIR = "model"


def version_rows(record: dict, data_revision: str = "") -> list[list]:
    """The data revisions of the run (the version stage's record)."""
    sets = record.get("sets") or {}
    real, syn = sets.get("real") or {}, sets.get("synthetic") or {}
    remote = (record.get("remote") or {}).get("url") if isinstance(record.get("remote"), dict) else record.get("remote")
    rows = [["real data revision (pipeline parameter)", data_revision or real.get("data_revision") or ""],
            ["real data content revision (staged bytes)", real.get("content_revision")
             or record.get("real_content_hash", "")],
            ["real data DVC revision", real.get("md5", "")],
            ["synthetic set DVC revision", syn.get("md5") or record.get("synthetic_revision", "")],
            ["synthetic set content revision", syn.get("content_revision", "")],
            ["pushed to DVC remote", (remote or "none") if syn.get("pushed", bool(remote)) else "not pushed (no remote)"]]
    synth = record.get("synthesizer") or {}
    if synth:
        rows.append(["synthesizer hash", synth.get("hash", "")])
    return rows


def selection_text(sel: dict) -> str:
    """The selection rule in words: the cleaning rule and its confidence, or the score with gamma or calibrate."""
    if sel.get("rule") == "clean":
        conf = (sel.get("cleaning") or {}).get("confidence")
        return f"cleaning rule (not p >= {conf} another class, prototype band, not memorized), score={sel.get('score')}"
    return ", ".join(f"{k}={sel[k]}" for k in ("score", "gamma", "calibrate") if sel.get(k) is not None)


def dose_text(clf: dict) -> str:
    """How the classifier drew the synthetic images (its lineage's classifier block)."""
    dose, ratio, weight = clf.get("synthetic_dose"), clf.get("synthetic_ratio"), clf.get("synthetic_weight")
    share = "the pooled share" if ratio is None else f"share {ratio:g} of a tail class's draws"
    return f"{dose or 'replace'}, {share}, loss weight {1.0 if weight is None else weight:g}"


def lineage_rows(card: dict | None) -> list[list]:
    """The exported model and what it was made from (its model card's lineage block)."""
    if not card:
        return []
    lin = card.get("lineage") or {}
    syn, synth, sel = lin.get("synthetic_set"), lin.get("synthesizer") or {}, lin.get("selection") or {}
    rows = [["exported model version", card.get("version", "")],
            ["classifier", f"{card.get('backbone', '')}, {(lin.get('classifier') or {}).get('loss')} loss"],
            ["training data revision", (lin.get("training_data") or {}).get("revision", "")]]
    if syn:
        rows += [["synthetic set revision (DVC)", syn.get("dvc_md5", "")],
                 ["synthetic images", syn.get("n_images", "")],
                 ["synthesizer hash", synth.get("hash", "")],
                 ["selection", selection_text(sel)],
                 ["synthetic dose", dose_text(lin.get("classifier") or {})]]
    else:
        rows.append(["synthetic set", "none: the exported arm was trained on real data only"])
    return rows


def timing_rows(timings) -> list[list]:
    """[[stage, seconds]] from {stage: seconds} or [{"stage", "seconds"}]."""
    if not timings:
        return []
    items = timings.items() if isinstance(timings, dict) else ((t.get("stage"), t.get("seconds")) for t in timings)
    rows = [[str(k), float(v)] for k, v in items if v is not None]
    if rows:
        rows.append(["total", float(sum(v for _, v in rows))])
    return [[k, f"{v:.1f}"] for k, v in rows]


def _copy_selection_report(selected: Path, out: Path) -> Path | None:
    import shutil

    page = selected / "report.html"
    if not page.is_file():
        return None
    dest = out / SELECTION_DIR
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(page, dest / "report.html")
    if (selected / "report_files").is_dir():
        shutil.copytree(selected / "report_files", dest / "report_files", dirs_exist_ok=True)
    return dest / "report.html"


def sampling_rows(candidates: str | Path) -> list[list]:
    """How this run sampled its candidates (from the candidate set's record): sampler, steps, guidance, and the UNet
    runtime and precision, since bf16 images differ from fp32 ones by a few levels."""
    g = CandidateSet(candidates).record() if Path(candidates).is_dir() else {}
    if not g:
        return []
    text = f"{g.get('sampler')} {g.get('steps')} steps, guidance {g.get('guidance')}"
    if g.get("mode") == "harmonize":
        text += f", harmonize strength {g.get('strength')}"
    return [["sampling in this run", text],
            ["UNet runtime / precision", f"{g.get('runtime', 'eager')} / {g.get('precision', 'fp32')}"]]


@dataclass
class _Arms:
    """The compared arms: COMPARISON rows (the reference first, then controls, then the synthetic arms), their
    evaluations and bootstrap intervals (empty when the evaluations do not match the rows one to one)."""

    rows: list[dict]
    evs: list[dict]
    ivs: list[dict]
    synthetic_arms: int

    @property
    def base(self) -> dict:
        return self.rows[0]

    @property
    def synth(self) -> list[tuple[dict, dict]]:
        return list(zip(self.rows, self.ivs))[-self.synthetic_arms:] if len(self.rows) > 1 else []

    @property
    def controls(self) -> list[dict]:
        return self.rows[1:len(self.rows) - self.synthetic_arms]

    @property
    def classes(self) -> list[str]:
        return [k[len("recall_"):] for k in self.rows[0] if k.startswith("recall_")]

    @property
    def split_name(self) -> str:
        return (self.evs[0].get("split") if self.evs else None) or "val"

    def check(self, comparison_csv) -> None:
        if not 1 <= self.synthetic_arms < max(len(self.rows), 2):
            raise ConfigError(f"{comparison_csv}: {len(self.rows)} arm(s) cannot hold a reference and "
                              f"{self.synthetic_arms} synthetic arm(s)")


@dataclass
class _SelectionFigures:
    """What the report shows of the OOD selection: statistics, kept and dropped grids, its own page."""

    quality: dict = field(default_factory=dict)
    grid: Path | None = None
    rejected_grid: Path | None = None
    page: Path | None = None


def _read_arms(out: Path, comparison_csv, evaluations, synthetic_arms: int) -> _Arms:
    """The arms of COMPARISON_CSV (copied to OUT/COMPARISON_FILE) and their per-class recall figure."""
    rows = read_comparison_csv(comparison_csv)
    if Path(comparison_csv).resolve() != (out / COMPARISON_FILE).resolve():
        write_comparison_csv(rows, out / COMPARISON_FILE)
    evs = [read_evaluation(e) for e in evaluations]
    ivs = [arm_intervals(e) for e in evs] if len(evs) == len(rows) else [{} for _ in rows]
    plot_per_class(rows, out / "per_class_recall.png", ivs)
    return _Arms(rows, evs, ivs, synthetic_arms)


def _selection_figures(out: Path, selected, candidates) -> _SelectionFigures:
    """Grids of the kept (and, given the candidates, the dropped) images; the selection page copied in."""
    fig = _SelectionFigures()
    if not selected:
        return fig
    selection = Selection(selected)
    fig.quality = selection.record() if selection.has_record() else {}
    if selection.manifest_path.is_file():
        kept = selection.images_by_class()
        fig.grid, _ = synthetic_grid(kept, out / "synthetic_grid.png")
        if candidates:
            dropped = rejected_images(Path(candidates), kept)
            if dropped:
                fig.rejected_grid = selection_grid(kept, dropped, _scores_by_id(Path(selected)),
                                                   out / SELECTION_GRID)
    fig.page = _copy_selection_report(Path(selected), out)
    return fig


def _copy_version_record(out: Path, version_record) -> dict:
    """The version stage's record (empty without one), kept beside the report so the run folder holds it."""
    if not (version_record and Path(version_record).is_file()):
        return {}
    record = json.loads(Path(version_record).read_text())
    if Path(version_record).resolve() != (out / VERSION_RECORD).resolve():
        (out / VERSION_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    return record


def _summary(arms: _Arms) -> str:
    """The report's opening paragraph: each synthetic arm against the reference and every control."""
    base, ivs = arms.base, arms.ivs
    summary = f"Balanced accuracy ({arms.split_name}): {base['method']} {fmt(base['balanced_accuracy'])}."
    for aug, aug_iv in arms.synth:
        delta = aug["balanced_accuracy"] - base["balanced_accuracy"]
        summary += f" {aug['method']} {fmt(aug['balanced_accuracy'])} ({delta:+.3f})."
        if ivs and ivs[0].get("balanced_accuracy") and aug_iv.get("balanced_accuracy"):
            (a0, a1), (b0, b1) = ivs[0]["balanced_accuracy"], aug_iv["balanced_accuracy"]
            summary += (" The 95% intervals overlap: this run alone does not separate it from the reference."
                        if a0 <= b1 and b0 <= a1 else " The 95% intervals do not overlap.")
        # Controls (e.g. the prior-shift control): what a synthetic arm must beat besides the reference.
        for mid in arms.controls:
            summary += (f" Minus {mid['method']} ({fmt(mid['balanced_accuracy'])}): "
                        f"{aug['balanced_accuracy'] - mid['balanced_accuracy']:+.3f}.")
    if arms.split_name == "val":
        summary += (" Every arm also chose its epoch on this split, so absolute values are optimistic;"
                    " compare the arms with each other.")
    return summary


# A report section: (title, kind, payload), rendered to markdown and HTML alike; kind: table, text, image, links.


def _result_sections(arms: _Arms) -> list[Section]:
    """The comparison table, per-class recall (with the synthetic arms' differences) and its figure."""
    rows, ivs, base = arms.rows, arms.ivs, arms.base
    table = [[r["method"], _cell(r["balanced_accuracy"], iv.get("balanced_accuracy"))] for r, iv in zip(rows, ivs)]
    support = {c: (v or {}).get("support") for c, v in arms.evs[0]["per_class"].items()} if arms.evs else {}
    pc_header = ["class", "support"] + [f"recall {r['method']}" for r in rows] + [
        f"{r['method']} - {base['method']}" for r, _ in arms.synth]
    pc_rows = [[c, support.get(c, "")] + [_cell(r[f"recall_{c}"], iv.get(f"recall_{c}")) for r, iv in zip(rows, ivs)]
               + [f"{r[f'recall_{c}'] - base[f'recall_{c}']:+.3f}" for r, _ in arms.synth]
               for c in arms.classes]
    n_boot = next((e["ci95"].get("n_boot") for e in arms.evs if e.get("ci95")), None)
    ci_note = (f"Cells show the value and its 95% bootstrap interval over the {arms.split_name} images "
               f"({n_boot} resamples)." if n_boot else "No bootstrap intervals were computed for this run.")
    return [(f"Comparison ({arms.split_name} split)", "table", [["method", "balanced accuracy"], table]),
            ("Per-class recall", "table", [pc_header, pc_rows]),
            ("", "text", [ci_note + " Support is the number of images of the class in the split; with a"
                                    " handful of images one image moves recall by many points."]),
            ("", "image", ["per_class_recall.png", "per-class recall with 95% intervals"])]


def _synthetic_sections(out: Path, sel: _SelectionFigures, extra_selected: dict | None) -> list[Section]:
    """The kept (and dropped) synthetic images, a grid per further synthetic arm, the selection statistics."""
    sections = [("Synthetic tail samples (kept after OOD selection)", "image" if sel.grid else "text",
                 ["synthetic_grid.png", "synthetic grid"] if sel.grid else ["No synthetic image was kept."])]
    if sel.rejected_grid:
        sections.append(("", "text", ["Kept candidates beside dropped ones, each with its p(intended class) under the "
                                      "real-only classifier and, when dropped, the floor tests it failed (OOD: "
                                      "outside its class's real held-out scores; other: confidently another class; "
                                      "proto: off the class prototype band; copy: memorized; rank: passed the "
                                      "floor, not chosen by the rule):"]))
        sections.append(("", "image", [SELECTION_GRID, "kept and dropped candidates with their scores"]))
    for i, (title, folder) in enumerate((extra_selected or {}).items()):
        extra = Selection(folder)
        extra_grid = (synthetic_grid(extra.images_by_class(), out / f"synthetic_grid_{i + 2}.png")[0]
                      if extra.manifest_path.is_file() else None)
        sections.append((title, "image" if extra_grid else "text",
                         [f"synthetic_grid_{i + 2}.png", title] if extra_grid else ["No synthetic image was kept."]))
    sections += _accounting_sections(sel.quality, extra_selected)
    sel_header, sel_rows = selection_table(sel.quality)
    sections.append(("Selection statistics", "table" if sel_rows else "text",
                     [sel_header, sel_rows] if sel_rows else ["No selection statistics."]))
    settings = json.dumps(sel.quality.get("selection", {}), default=str)
    sections.append(("", "text", [f"Selection settings: `{settings}`"]))
    return sections


def _accounting_sections(quality: dict, extra_selected: dict | None) -> list[Section]:
    """What happened to the candidates of every synthetic arm: the gate, the floor, the rule."""
    rows, lines = candidate_accounting("main synthetic arm", quality)
    for title, folder in (extra_selected or {}).items():
        extra = Selection(folder)
        if extra.has_record():
            more, more_lines = candidate_accounting(title, extra.record())
            rows, lines = rows + more, lines + more_lines
    if not rows:
        return []
    note = ("A candidate is kept only above the floor (tailsynth.ood.floor: OOD score within the floor quantile of "
            "its class's real held-out images, not confidently another class, inside the prototype band, not "
            "memorized); the rule then chooses among those. The last column is the share of real held-out images of "
            "the class that pass the same floor. A synthetic arm that kept no image is never served.")
    return [("Synthetic candidates: gate, floor and selection", "table", [ACCOUNTING_HEADER, rows]),
            ("", "text", [note])] + [("", "text", [line]) for line in lines]


def _provenance_sections(revision: list, model_card: dict | None, models: list, timings, extra: dict | None,
                         page_links: dict) -> list[Section]:
    """Data revision, the exported model's lineage, diffusion model, stage timings, run facts, linked pages."""
    sections = [("Data revision", "facts", [["item", "value"], revision])]
    lineage = lineage_rows(model_card)
    if lineage:
        sections.append(("Lineage of the exported model", "facts", [["link", "value"], lineage]))
        sections.append(("", "text", ["Follow a served prediction back to its synthetic images with "
                                      f"`tailsynth lineage --model-version {model_card.get('version')}`."]))
    if models:
        sections.append(("Diffusion model", "facts", [["item", "value"], models]))
    timing = timing_rows(timings)
    if timing:
        sections.append(("Stage timings", "table", [["stage", "seconds"], timing]))
    if extra:
        sections.append(("Run", "facts", [["item", "value"], [[k, v] for k, v in extra.items()]]))
    if page_links:
        sections.append(("Linked pages", "links", list(page_links.items())))
    return sections


def build_run_report(out: str | Path, comparison_csv: str | Path, evaluations: Sequence[str | Path] = (),
                 candidates: str | Path | None = None, selected: str | Path | None = None,
                 version_record: str | Path | None = None, data_revision: str = "", profile: str = "",
                 diffusion_model: str | Path | None = None, extra: dict | None = None,
                 model_card: dict | None = None, timings=None, links: dict | None = None,
                 synthetic_arms: int = 1, extra_selected: dict | None = None, serving: str | Path | None = None) -> Path:
    """Write OUT/report.md, OUT/report.html, OUT/comparison.csv and the figures; returns OUT.

    Rows of COMPARISON_CSV: the reference arm first, then controls, then the last SYNTHETIC_ARMS rows, each of which
    is compared with the reference and with every control. EXTRA_SELECTED: {title: selection folder} of further
    synthetic arms whose kept images are shown as a grid.

    LINKS: {label: path relative to OUT} of pages that exist beside the report (model card, monitoring pages);
    the selection report is copied in from SELECTED. MODEL_CARD: the exported model's card (its lineage block).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / INPUTS_FILE).write_text(json.dumps({
        "comparison_csv": str(comparison_csv), "evaluations": [str(e) for e in evaluations],
        "candidates": str(candidates) if candidates else None, "selected": str(selected) if selected else None,
        "version_record": str(version_record) if version_record else None, "data_revision": data_revision,
        "profile": profile, "diffusion_model": str(diffusion_model) if diffusion_model else None,
        "synthetic_arms": synthetic_arms, "serving": str(serving) if serving else None,
        "extra_selected": {k: str(v) for k, v in (extra_selected or {}).items()}}, indent=2))
    arms = _read_arms(out, comparison_csv, evaluations, synthetic_arms)
    sel = _selection_figures(out, selected, candidates)
    revision = version_rows(_copy_version_record(out, version_record), data_revision)
    arms.check(comparison_csv)
    page_links = dict(links or {})
    if sel.page:
        page_links = {"OOD selection report": f"{SELECTION_DIR}/report.html", **page_links}
    models = diffusion_rows(diffusion_model) if diffusion_model else []
    if models and candidates:
        models += sampling_rows(candidates)
    sections = (_result_sections(arms) + _serving_sections(serving) + _synthetic_sections(out, sel, extra_selected)
                + _provenance_sections(revision, model_card, models, timings, extra, page_links))

    title = f"tailsynth train_augment report{f' (profile {profile})' if profile else ''}"
    summary = _summary(arms)
    (out / "report.md").write_text(sections_markdown(title, summary, sections))
    (out / "report.html").write_text(sections_html(title, summary, sections))
    return out


def finalize_run_report(run_dir: str | Path, timings=None) -> Path:
    """Rebuild RUN_DIR's report with what only the finished run knows: the exported model's card (copied to
    RUN_DIR/model/ and linked), monitoring pages found in the run folder, and stage timings (TIMINGS, else the
    durations stages recorded in the run record, `runinfo.RUN_FILE`)."""
    import shutil

    from .export import model_card_html

    run_dir = Path(run_dir)
    inputs_path = run_dir / INPUTS_FILE
    if not inputs_path.is_file():
        raise DataError(f"{inputs_path}: not found (the report stage writes it beside report.html)")
    inputs = json.loads(inputs_path.read_text())
    links, card = {}, None
    found = sorted((run_dir / "artifacts").rglob(CARD_JSON)) if (run_dir / "artifacts").is_dir() else []
    # The exported classifier's card (a shipped synthesizer installed in the run carries a card too). The artifacts
    # keep earlier runs into this folder, whose cards may be of an older schema: the newest card is this run's,
    # and only that one is read with the schema check.
    cards = [p for p in found if _card_kind(p) == "classifier"]
    if cards:
        src = max(cards, key=lambda p: p.stat().st_mtime).parent
        dest = run_dir / MODEL_DIR
        dest.mkdir(exist_ok=True)
        for name in (CARD_JSON, CARD_MD):
            shutil.copyfile(src / name, dest / name)
        card = read_card(dest)
        (dest / "model_card.html").write_text(model_card_html(card, nav=[("run report", "../report.html")]))
        links["Model card of the exported model"] = f"{MODEL_DIR}/model_card.html"
    for page in sorted(run_dir.glob("monitoring/**/index.html")):
        links[f"Monitoring windows ({page.parent.relative_to(run_dir)})"] = page.relative_to(run_dir).as_posix()
    for page in sorted(run_dir.glob("monitoring/**/evidently/overall.html")):
        window = page.parent.parent.relative_to(run_dir).as_posix()
        links[f"Evidently: prediction drift and data quality, {window}"] = page.relative_to(run_dir).as_posix()
    if timings is None:
        timings = recorded_timings(run_dir)
    record = run_dir / VERSION_RECORD
    return build_run_report(run_dir, run_dir / COMPARISON_FILE, inputs["evaluations"], inputs["candidates"],
                        inputs["selected"], record if record.is_file() else inputs["version_record"],
                        inputs["data_revision"], inputs["profile"], inputs["diffusion_model"],
                        model_card=card, timings=timings, links=links,
                        synthetic_arms=inputs.get("synthetic_arms", 1), extra_selected=inputs.get("extra_selected"),
                     serving=inputs.get("serving"))


def _card_kind(path: Path) -> str | None:
    """The `kind` a card file declares, None for an unreadable one (it is never the card a report shows)."""
    try:
        return json.loads(path.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def recorded_timings(run_dir: Path) -> dict:
    """{stage: seconds} for the stages of RUN_DIR's run record (`runinfo.RUN_FILE`) that recorded a duration
    (`seconds` or `wall_s`), and the per-task times a pipeline run recorded (`task_seconds`)."""
    from .runinfo import read_run

    out = {}
    for stage, entry in ((read_run(run_dir).get("stages")) or {}).items():
        entry = entry or {}
        for task in entry.get("task_seconds") or []:  # a pipeline run's per-task times
            if isinstance(task, dict) and isinstance(task.get("seconds"), (int, float)):
                out[str(task.get("stage"))] = float(task["seconds"])
        v = entry.get("seconds", entry.get("wall_s"))
        if isinstance(v, (int, float)):
            out[stage] = float(v)
    return out
