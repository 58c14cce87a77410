"""Quality gates of a synthesizer, per tail class and synthesis mode (`tailsynth synth-quality`).

Three questions a reviewer asks before synthetic lesions may enter training:
1. **Label fidelity**: does a real-only classifier see the intended class in them? Mean p(intended class) of the
   samples, next to the same classifier's mean p(true class) on real validation images of that class (the figure
   real data reaches with this classifier). Gate: ratio >= 0.8.
2. **Train on synthetic, test on real (TOS)**: can they stand in for real images of the class? Recall on real val of a
   classifier whose training set has that class's real images replaced by as many synthetic ones, next to the
   recall of the same recipe trained on real images. Gate: ratio >= 0.7.
3. **Distribution distance**: FD and KID in the classifier's feature space at equal n, synthetic vs real train, next to
   real val vs real train (the sampling floor at that n); and the memorized fraction (expected 0).
The functions below are pure (arrays in, figures out); `run_gates` drives generation, scoring, the TOS classifiers
and reports. The gates score in the OOD stage's feature space, so they live here; the real-only classifier and the
trainer of the TOS classifiers come from the classifier stage, later in the package order, so the caller passes
them in.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.classes import TAIL_CLASSES
from ..data.errors import DataError
from ..errors import ConfigError, MissingInputError
from ..formatting import fmt
from ..pages import bold, code, heading, image, page, para, table
from .features import FeatureModel
from .quality import frechet_distance, kid
from .select import ScoredCandidates, jsonable, score_candidates

# The gate run's folder: OUT/gates.json (the record, GATES_FORMAT), OUT/index.html, OUT/<mode>/ (a candidate set,
# `diffusion.candidate_set`) with OUT/<mode>/gate_scores.csv. Folders written before the rename hold the record and
# the scores under the selection's names (`ood.selection`: another schema); `read_gates`/`gate_scores_path` read
# those as version 0 when their format says they are gate records.
GATES_FILE = "gates.json"
GATE_SCORES_FILE = "gate_scores.csv"
GATES_FORMAT = "tailsynth-synth-quality/1"
LABEL_FIDELITY_RATIO = 0.8
TOS_RATIO = 0.7
MODES = ("inpaint", "harmonize")


# ---- pure gate functions ------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> float:
    return float(a / b) if b and math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


def label_fidelity(p_intended_synthetic, p_true_real) -> dict:
    """Mean p(intended) over synthetic samples vs mean p(true class) over real images of the class."""
    syn = float(np.mean(p_intended_synthetic)) if len(p_intended_synthetic) else math.nan
    real = float(np.mean(p_true_real)) if len(p_true_real) else math.nan
    r = ratio(syn, real)
    return {"label_fidelity": syn, "label_fidelity_real": real, "label_fidelity_ratio": r,
            "label_fidelity_pass": bool(math.isfinite(r) and r >= LABEL_FIDELITY_RATIO),
            "n_synthetic": len(p_intended_synthetic), "n_real": len(p_true_real)}


def tos_verdict(tos_recall: float, real_recall: float) -> dict:
    r = ratio(tos_recall, real_recall)
    return {"tos_recall": tos_recall, "real_recall": real_recall, "tos_ratio": r,
            "tos_pass": bool(math.isfinite(r) and r >= TOS_RATIO)}


def replace_class(images: np.ndarray, labels: np.ndarray, cls: int, synthetic: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The training set with every real image of class `cls` replaced by as many synthetic ones (drawn without
    replacement from `synthetic`): same size, same class counts, only the class's pixels change."""
    real = labels == cls
    n = int(real.sum())
    if n == 0:
        raise DataError(f"class index {cls}: no real training images to replace")
    if len(synthetic) < n:
        raise DataError(f"class index {cls}: {len(synthetic)} synthetic images, need {n} to replace the real ones")
    pick = synthetic[np.sort(rng.choice(len(synthetic), n, replace=False))]
    x = np.concatenate([images[~real], pick])
    y = np.concatenate([labels[~real], np.full(n, cls, labels.dtype)])
    return x, y


def equal_n_distances(syn_feats, train_feats, val_feats, seed: int = 0) -> dict:
    """FD and KID of synthetic vs real train, and of real val vs real train, every set subsampled to one n
    (FD is biased by n, so figures are comparable only at equal n)."""
    syn, tr, va = (np.asarray(a, np.float64) for a in (syn_feats, train_feats, val_feats))
    n = int(min(len(syn), len(tr), len(va)))
    if n < 2:
        return {"n": n, "fd_synthetic": math.nan, "fd_real_val": math.nan, "kid_synthetic": math.nan,
                "kid_real_val": math.nan}
    rng = np.random.default_rng(seed)
    s, t, v = (a[rng.choice(len(a), n, replace=False)] for a in (syn, tr, va))
    return {"n": n, "fd_synthetic": frechet_distance(t, s), "fd_real_val": frechet_distance(t, v),
            "kid_synthetic": kid(t, s, subset_size=n)[0], "kid_real_val": kid(t, v, subset_size=n)[0]}


def write_npz(path: Path, classes: list[str], train_x, train_y, val_x, val_y) -> Path:
    """A MedMNIST-layout .npz (labels in dermamnist.npz's index order) that the classifier trainer reads."""
    from ..data.medmnist import CLASSES as NPZ_ORDER

    foreign = [c for c in classes if c not in NPZ_ORDER]
    if foreign:
        raise DataError(f"train-on-synthetic gate: class(es) {', '.join(foreign)} have no MedMNIST label index "
                        f"(supported: {', '.join(NPZ_ORDER)}); run with --no-tos on this source")
    to_npz = np.array([NPZ_ORDER.index(c) for c in classes])
    np.savez(path, train_images=train_x, train_labels=to_npz[train_y].reshape(-1, 1).astype(np.uint8),
             val_images=val_x, val_labels=to_npz[val_y].reshape(-1, 1).astype(np.uint8))
    return path


SCORE_FIELDS = ("id", "class", "p_intended")


def write_scores(path: Path, sc) -> Path:
    """Per-candidate p(intended class) under the gate classifier: what a paired comparison of two gate runs
    (same seeds and backgrounds, e.g. fp32 vs bf16) needs."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SCORE_FIELDS)
        for i, cid in enumerate(sc.ids):
            w.writerow([cid, sc.class_names[int(sc.cls_idx[i])], f"{float(sc.scores['p_intended'][i]):.6f}"])
    return path


def gate_scores_path(folder: Path, mode: str) -> Path:
    """OUT/<mode>/gate_scores.csv of a gate run (the selection's scores name in folders from before the rename)."""
    from .selection import SCORES_FILE as OLD_NAME

    path = Path(folder) / mode / GATE_SCORES_FILE
    old = path.with_name(OLD_NAME)
    return old if not path.is_file() and old.is_file() else path


def read_gates(folder: Path) -> dict:
    """The gate run's record; a folder from before the rename is read from its old name when it is a gate record."""
    from .selection import RECORD_FILE as OLD_NAME

    path = Path(folder) / GATES_FILE
    if not path.is_file() and (Path(folder) / OLD_NAME).is_file():
        old = json.loads((Path(folder) / OLD_NAME).read_text())
        if isinstance(old, dict) and (old.get("format") == GATES_FORMAT or "gates" in old and "config" in old):
            return old
        raise DataError(f"{Path(folder) / OLD_NAME}: not a gate record; expected {path} ({GATES_FORMAT}, "
                        "written by `tailsynth synth-quality`)")
    if not path.is_file():
        raise MissingInputError(f"{path} missing: {folder} is not a synth-quality output folder")
    rec = json.loads(path.read_text())
    if rec.get("format", GATES_FORMAT) != GATES_FORMAT:
        raise DataError(f"{path}: format {rec.get('format')!r}; expected {GATES_FORMAT}")
    return rec


def read_scores(path: Path) -> dict[str, tuple[str, float]]:
    import csv

    if not path.is_file():
        raise MissingInputError(f"{path} missing: re-run synth-quality (per-candidate scores are written since "
                                "the gate comparison was added)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(SCORE_FIELDS) - set(rows[0]):
        raise DataError(f"{path}: expected columns {', '.join(SCORE_FIELDS)}")
    return {r["id"]: (r["class"], float(r["p_intended"])) for r in rows}


def paired_fidelity(a: dict, b: dict, cls: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean and 95% bootstrap interval of p_intended(b) - p_intended(a) over the candidates both runs made of cls
    (paired by id: same seed, background and mask)."""
    ids = sorted(k for k, (c, _) in a.items() if c == cls and k in b)
    if not ids:
        raise DataError(f"no candidate of {cls} appears in both gate runs (were they made with the same seeds?)")
    d = np.array([b[k][1] - a[k][1] for k in ids])
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {"n_paired": len(ids), "mean_diff": float(d.mean()), "ci95": [float(lo), float(hi)]}


# ---- the driver -----------------------------------------------------------------------------------------------
@dataclass
class GateConfig:
    model: str
    data: str
    classifier: str
    out: str
    classes: list[str] = field(default_factory=lambda: list(TAIL_CLASSES))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    strength: float = 0.5
    sampler: str = "dpmsolver"
    steps: int = 20
    guidance: float = 2.0
    seed: int = 0
    # The TOS classifiers: a cheap, fixed recipe (the same for the real-trained reference and every replacement).
    gate_backbone: str = "test_resnet"
    gate_epochs: int = 5
    gate_sampler: str = "class-balanced"
    gate_seeds: list[int] = field(default_factory=lambda: [0])
    tos: bool = True
    # Candidates per class and mode: the class's real training count, raised to at least min_count (the label
    # fidelity, distances and memorization figures of a 61-image class are too noisy to rank two synthesizers).
    min_count: int = 0
    batch_size: int = 64
    # How the UNet runs (tailsynth.diffusion.runtime): the gates are a property of the images, so a runtime or
    # precision that changes them (bf16) is gated by running synth-quality with it.
    runtime: str = "eager"
    precision: str = "auto"

    def __post_init__(self):
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ConfigError(f"unknown mode(s) {', '.join(bad)} (choose from {', '.join(MODES)})")
        if not self.classes:
            raise ConfigError("synth-quality: no classes given")
        from ..diffusion.runtime import check_runtime

        check_runtime(self.runtime, False, self.precision)
        if self.min_count < 0:
            raise ConfigError(f"synth-quality: min_count {self.min_count} must be >= 0")


def _generate_mode(cfg: GateConfig, mode: str, counts: dict[str, int], out: Path) -> Path:
    """Candidates of every gate class, n(c) = COUNTS[c], in one candidate set per mode."""
    import shutil

    from ..diffusion.candidate_set import merge_candidate_sets
    from ..diffusion.generate import GenerateConfig, generate

    folder = out / mode
    parts = []
    for c in cfg.classes:
        part = out / "parts" / f"{mode}_{c}"
        if part.exists():
            shutil.rmtree(part)
        generate(GenerateConfig(model=cfg.model, data=cfg.data, out=str(part), classes=[c], policy="fixed",
                                count=counts[c], mode=mode, strength=cfg.strength, sampler=cfg.sampler,
                                steps=cfg.steps, guidance=cfg.guidance, seed=cfg.seed, batch_size=cfg.batch_size,
                                save_inputs=True, progress=True, runtime=cfg.runtime, precision=cfg.precision))
        parts.append(part)
    # One candidate set (images + manifest) per mode, as `select` and the trainer read it.
    if folder.exists():
        shutil.rmtree(folder)
    merge_candidate_sets(parts, folder, shards=False)
    shutil.rmtree(out / "parts")
    return folder


Trainer = Callable[..., dict]  # tailsynth.classify.train.train_classifier: (data, out, **recipe) -> metrics


def _recall_after_training(train: Trainer, npz: Path, out: Path, cfg: GateConfig, seed: int) -> dict:
    m = train(str(npz), str(out), backbone=cfg.gate_backbone, loss="ce", epochs=cfg.gate_epochs, seed=seed,
              sampler=cfg.gate_sampler, quiet=True, write_reports=False)
    return {c: v.get("recall") for c, v in m["per_class"].items()}


def _grid(out: Path, folders: dict[str, Path], classes: list[str], n: int = 6) -> str:
    """Rows of [real source lesion | background | inpaint | harmonize] for the same background and seed."""
    from ..data.isic import decode_file
    from ..diffusion.candidate_set import CandidateSet
    from ..diffusion.generate import write_grid

    tiles = []
    sets = {mode: CandidateSet(f) for mode, f in folders.items()}
    by_mode = {mode: {(r["class"], r["id"].rsplit("_", 1)[-1]): r for r in cs.rows()} for mode, cs in sets.items()}
    keys = sorted(next(iter(by_mode.values())))
    cols = 0
    for c in classes:
        for key in [k for k in keys if k[0] == c][:n]:
            row = []
            if "harmonize" in by_mode and key in by_mode["harmonize"]:
                h = by_mode["harmonize"][key]
                row.append(decode_file(str(sets["harmonize"].input_path(h, "composite"))))
            anyr = next(by_mode[m][key] for m in by_mode if key in by_mode[m])
            anym = next(m for m in by_mode if key in by_mode[m])
            row.append(decode_file(str(sets[anym].input_path(anyr, "background"))))
            for mode in MODES:
                if mode in by_mode and key in by_mode[mode]:
                    row.append(decode_file(str(sets[mode].image_path(by_mode[mode][key]["id"]))))
            cols = len(row)
            tiles += row
    path = out / "grid_side_by_side.png"
    write_grid(tiles, path, cols=cols or 1, scale=4)
    return path.name


def _gate_figures(sc: ScoredCandidates, cfg: GateConfig) -> dict:
    """Label fidelity, equal-n distances and memorization of one mode's candidates, per gate class."""
    per_class = {}
    for c in cfg.classes:
        ci = sc.class_names.index(c)
        syn = sc.cls_idx == ci
        real_val = sc.val_cls == ci
        entry = label_fidelity(sc.scores["p_intended"][syn], sc.val_scores["p_intended"][real_val])
        entry.update(equal_n_distances(sc.features[syn], sc.train_features[sc.train_cls == ci],
                                       sc.val_features[real_val], seed=cfg.seed))
        entry["memorized_fraction"] = float(sc.memo.memorized[syn].mean()) if syn.any() else math.nan
        entry["n_memorized"] = int(sc.memo.memorized[syn].sum())
        per_class[c] = entry
    return per_class


def _synthetic_images(folder: Path, cls: str) -> np.ndarray:
    from ..data.isic import decode_file
    from ..diffusion.candidate_set import CandidateSet

    cs = CandidateSet(folder)
    return np.stack([decode_file(str(cs.image_path(r.id))) for r in cs.read() if r.cls == cls])


def _train_on_synthetic(cfg: GateConfig, train: Trainer, ds, res: int, folders: dict[str, Path],
                        per_mode: dict[str, dict], work: Path) -> dict:
    """The TOS gate: per mode and class, recall of classifiers whose training set has the class's real images
    replaced by synthetic ones, next to the same recipe on real images; adds the verdicts to PER_MODE."""
    classes = list(ds.classes)
    xtr, ytr = ds.split("train").arrays(res)
    xva, yva = ds.split("val").arrays(res)
    work.mkdir(exist_ok=True)
    real_npz = write_npz(work / "real.npz", classes, xtr, ytr, xva, yva)
    real_recall = {s: _recall_after_training(train, real_npz, work / f"real_s{s}", cfg, s) for s in cfg.gate_seeds}
    runs: dict = {"real": real_recall}
    for mode, f in folders.items():
        for c in cfg.classes:
            ci = classes.index(c)
            syn = _synthetic_images(f, c)
            recalls = []
            for s in cfg.gate_seeds:
                x, y = replace_class(xtr, ytr, ci, syn, np.random.default_rng(s))
                npz = write_npz(work / f"{mode}_{c}.npz", classes, x, y, xva, yva)
                recalls.append(_recall_after_training(train, npz, work / f"{mode}_{c}_s{s}", cfg, s)[c])
                npz.unlink()
            runs[f"{mode}_{c}"] = recalls
            real_c = float(np.mean([real_recall[s][c] for s in cfg.gate_seeds]))
            per_mode[mode][c].update(tos_verdict(float(np.mean(recalls)), real_c))
    real_npz.unlink()
    return runs


def run_gates(cfg: GateConfig, classifier: FeatureModel, train: Trainer) -> dict:
    """Generate per mode, score with the real-only CLASSIFIER (cfg.classifier, loaded by the caller), train the TOS
    classifiers with TRAIN, write gates.json (GATES_FILE) and index.html into OUT; returns the record."""
    from ..data import ensure_splits, load_source
    from ..diffusion.model import model_hash, read_meta
    from ..diffusion.runtime import resolve_precision

    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    res = int(read_meta(cfg.model)["resolution"])
    ds = ensure_splits(load_source(cfg.data), seed=0)
    counts = ds.split("train").class_counts()
    missing = [c for c in cfg.classes if counts.get(c, 0) == 0]
    if missing:
        raise DataError(f"{cfg.data}: no training images of {', '.join(missing)}")

    wanted = {c: max(int(counts[c]), cfg.min_count) for c in cfg.classes}
    folders = {mode: _generate_mode(cfg, mode, wanted, out) for mode in cfg.modes}
    per_mode: dict[str, dict] = {}
    for mode, folder in folders.items():
        sc = score_candidates(folder, cfg.data, classifier)
        per_mode[mode] = _gate_figures(sc, cfg)
        write_scores(folder / GATE_SCORES_FILE, sc)
    tos_runs = _train_on_synthetic(cfg, train, ds, res, folders, per_mode, out / "tos") if cfg.tos else {}

    quality = {
        "format": GATES_FORMAT,
        "model": str(cfg.model),
        "model_hash": model_hash(cfg.model),
        "data": str(cfg.data),
        "classifier": str(cfg.classifier),
        "config": asdict(cfg),
        "precision": resolve_precision(cfg.precision, cfg.runtime),
        "targets": {"label_fidelity_ratio": LABEL_FIDELITY_RATIO, "tos_ratio": TOS_RATIO},
        "gates": per_mode,
        "tos_runs": tos_runs,
        "all_pass": all(g.get("label_fidelity_pass") and g.get("tos_pass", not cfg.tos)
                        for m in per_mode.values() for g in m.values()),
        "grid": _grid(out, folders, cfg.classes),
        "wall_s": round(time.time() - t0, 1),
        "feature_space": "penultimate layer of the real-only classifier (Inception weights are not available offline)",
    }
    quality = jsonable(quality)
    (out / GATES_FILE).write_text(json.dumps(quality, indent=2) + "\n")
    write_html(quality, out / "index.html")
    return quality


def write_html(q: dict, path: Path) -> Path:
    head = ["mode", "class", "label fidelity", "real p(true)", "ratio (>= 0.8)", "TOS recall", "real-trained recall",
            "ratio (>= 0.7)", "FD syn", "FD real val", "KID syn", "KID real val", "n", "memorized"]
    rows = []
    for mode, per in q["gates"].items():
        for c, g in per.items():
            rows.append([mode, c, g.get("label_fidelity"), g.get("label_fidelity_real"),
                         f"{fmt(g.get('label_fidelity_ratio'))} {'pass' if g.get('label_fidelity_pass') else 'FAIL'}",
                         g.get("tos_recall"), g.get("real_recall"),
                         f"{fmt(g.get('tos_ratio'))} {'pass' if g.get('tos_pass') else 'FAIL'}" if "tos_ratio" in g
                         else "not run",
                         g.get("fd_synthetic"), g.get("fd_real_val"), g.get("kid_synthetic"), g.get("kid_real_val"),
                         g.get("n"), g.get("memorized_fraction")])
    path.write_text(page(
        "synthesizer quality gates",
        para("Model ", code(q["model"]), f" (weights {q['model_hash']}); data ", code(q["data"]), "; classifier ",
             code(q["classifier"]), "."),
        para("Overall: ", bold("all gates pass" if q["all_pass"] else "some gates fail"),
             f". FD/KID in {q['feature_space']}, at equal n per class."),
        table(head, rows),
        heading("Side by side"),
        para("Each row: real source lesion pasted on the background (harmonize input) | background | inpaint | "
             "harmonize."),
        image(q["grid"], "side-by-side grid"), h1="Synthesizer quality gates"))
    return path
