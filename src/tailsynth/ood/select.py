"""OOD post-selection of synthetic candidates (`tailsynth select`).

1. Score every candidate against the real training data of its intended class, in the feature space of a
   classifier trained on real data only (scores.py), handed in as a FeatureModel (features.py).
2. Flag near-copies of training images (memorize.py); they are never kept.
3. Keep, per class, either the fraction `gamma` of candidates with the lowest OOD score, or those whose score
   falls inside the `calibrate` quantile of the same score on real validation images of that class.
4. Write the selection folder (`selection.Selection`: the kept set in the trainer's `path,class[,weight]`, scores,
   the quality record) and report.html.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.errors import DataError
from ..errors import ConfigError
from .features import FeatureModel
from .floor import Floor, apply_floor, floor_summary, reason_labels
from .scores import OOD_SCORES, RealReference, as_ood, score_all
from .selection import SCORES_COLUMNS, SCORES_DETAIL_FILE, Selection

WEIGHTINGS = ("p_intended", "typicality")


# ---- selection rules (pure numpy; what the tests exercise directly) --------------------------------------
def keep_fraction(ood: np.ndarray, cls: np.ndarray, gamma: float, eligible: np.ndarray | None = None) -> np.ndarray:
    """Per class, keep round(gamma * n_class) candidates with the lowest OOD score among the eligible ones.

    The quota is a share of *all* candidates of the class, so memorized candidates count against it rather
    than letting a worse candidate take their place.
    """
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma {gamma}: must lie in (0, 1]")
    ood = np.asarray(ood, dtype=np.float64)
    cls = np.asarray(cls)
    eligible = np.ones(len(ood), bool) if eligible is None else np.asarray(eligible, bool)
    keep = np.zeros(len(ood), bool)
    for c in np.unique(cls):
        members = np.flatnonzero(cls == c)
        quota = math.floor(gamma * len(members) + 0.5)
        ok = members[eligible[members] & np.isfinite(ood[members])]
        order = ok[np.argsort(ood[ok], kind="stable")]
        keep[order[:quota]] = True
    return keep


def calibrate_thresholds(val_ood: np.ndarray, val_cls: np.ndarray, quantile: float) -> dict:
    """Per class, the `quantile` of the OOD score on real validation images of that class."""
    if not 0.0 < quantile <= 1.0:
        raise ConfigError(f"calibration quantile {quantile}: must lie in (0, 1]")
    val_ood, val_cls = np.asarray(val_ood, np.float64), np.asarray(val_cls)
    return {c: float(np.quantile(val_ood[val_cls == c], quantile)) for c in np.unique(val_cls)}


def keep_calibrated(ood: np.ndarray, cls: np.ndarray, thresholds: dict, eligible: np.ndarray | None = None) -> np.ndarray:
    ood, cls = np.asarray(ood, np.float64), np.asarray(cls)
    missing = sorted({str(c) for c in np.unique(cls) if c not in thresholds})
    if missing:
        raise ConfigError(f"no real validation images of class(es) {', '.join(missing)} to calibrate a threshold on")
    eligible = np.ones(len(ood), bool) if eligible is None else np.asarray(eligible, bool)
    thr = np.array([thresholds[c] for c in cls], dtype=np.float64)
    return eligible & (ood <= thr)


def typicality(ood: np.ndarray, cls: np.ndarray, val_ood: np.ndarray, val_cls: np.ndarray) -> np.ndarray:
    """Share of real validation images of the same class that score at least as badly: 1 = as typical as
    the most typical real image, near 0 = worse than almost all of them."""
    out = np.empty(len(ood))
    for c in np.unique(cls):
        ref = np.sort(np.asarray(val_ood, np.float64)[np.asarray(val_cls) == c])
        m = np.asarray(cls) == c
        if len(ref) == 0:
            out[m] = np.nan
            continue
        out[m] = 1.0 - np.searchsorted(ref, np.asarray(ood)[m], side="left") / len(ref)
    return out


# ---- scoring a candidate folder against real data --------------------------------------------------------
@dataclass
class ScoredCandidates:
    """Everything selection, reports and the experiment need, computed once."""

    ids: list[str]
    classes: list[str]
    paths: list[Path]
    cls_idx: np.ndarray
    scores: dict[str, np.ndarray]
    memo: object  # memorize.MemorizationResult
    features: np.ndarray
    val_scores: dict[str, np.ndarray]
    val_cls: np.ndarray
    train_features: np.ndarray
    train_cls: np.ndarray
    val_features: np.ndarray
    class_names: list[str]
    images: np.ndarray  # candidates at the classifier's resolution (for grids)
    info: dict = field(default_factory=dict)
    probs: np.ndarray | None = None  # the scorer's class probabilities per candidate (cleaning)
    val_probs: np.ndarray | None = None  # the same on the real held-out images (the floor's calibration)

    @functools.cached_property
    def prototypes(self):
        """The real classes' prototypes (ood.clean), fitted once: the floor and the cleaning rule both use them."""
        from .clean import Prototypes

        return Prototypes.fit(self.train_features, self.train_cls, len(self.class_names))


def _real_splits(real, splits, split_seed: int):
    from ..data import ensure_splits, load_source

    ds = load_source(real, splits)
    if "train" not in ds.splits or "val" not in ds.splits:
        ds = ensure_splits(ds, seed=split_seed)
    train, val = ds.split("train"), ds.split("val")
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{real}: need both train and val images (found splits {ds.splits})")
    return train, val


def _label_indices(ds, class_names: list[str], what: str) -> np.ndarray:
    idx = {c: i for i, c in enumerate(class_names)}
    bad = sorted({r.label for r in ds.records} - set(idx))
    if bad:
        raise DataError(f"{what}: class(es) {', '.join(bad)} are not among the classifier's classes {class_names}")
    return np.array([idx[r.label] for r in ds.records], dtype=np.int64)


def shrink(images: np.ndarray, size: int) -> np.ndarray:
    """IMAGES at no more than SIZE px (pixel comparisons of full-size images would not fit in memory)."""
    from ..data.records import resize_rgb

    if images.shape[1] <= size:
        return images
    return np.stack([resize_rgb(im, size) for im in images]) if len(images) else images[:, :size, :size]


def background_lesion_rows(train_records, background_ids) -> np.ndarray:
    """N x K training rows (padded with -1) of every image of each candidate's background lesion."""
    rows_of: dict[str, list[int]] = {}
    group_of: dict[str, str] = {}
    for i, r in enumerate(train_records):
        rows_of.setdefault(r.group_id, []).append(i)
        group_of[r.image_id] = r.group_id
    per = [rows_of.get(group_of.get(b, ""), []) for b in background_ids]
    out = np.full((len(per), max([1, *map(len, per)])), -1, dtype=np.int64)
    for i, rows in enumerate(per):
        out[i, : len(rows)] = rows
    return out


def score_candidates(candidates, real, classifier: FeatureModel, *, splits=None, split_seed: int = 0, knn_k: int = 5,
                     shrinkage="ledoit-wolf", memorization_quantile: float = 0.01, batch_size: int = 256,
                     pixel_size: int = 32) -> ScoredCandidates:
    from ..diffusion.candidate_set import CandidateSet
    from .candidates import read_candidates
    from .memorize import check_memorization, pixel_vectors, thresholds_from_real

    cands = read_candidates(candidates)
    names = list(classifier.classes)
    res = int(classifier.resolution)
    bad = sorted(set(cands.classes) - set(names))
    if bad:
        raise DataError(f"{CandidateSet(candidates).manifest_path}: class(es) {', '.join(bad)} are not among the "
                        f"classifier's classes {names}")
    train, val = _real_splits(real, splits, split_seed)
    ytr, yva = _label_indices(train, names, f"{real} (train)"), _label_indices(val, names, f"{real} (val)")
    xtr, _ = train.arrays(res)
    xva, _ = val.arrays(res)
    xc = cands.images(res)
    yc = np.array([names.index(c) for c in cands.classes], dtype=np.int64)

    from ..progress import Progress

    bar = Progress(len(xtr) + len(xva) + len(xc), "select: classifier features", unit="img")
    _, ftr, _ = classifier.predict(xtr, batch_size)
    bar.update(len(xtr), part="real train")
    pva, fva, lva = classifier.predict(xva, batch_size)
    bar.update(len(xtr) + len(xva), part="real val")
    pc, fc, lc = classifier.predict(xc, batch_size)
    bar.update(len(xtr) + len(xva) + len(xc), part="candidates")
    bar.close()

    ref = RealReference.fit(ftr, ytr, len(names), knn_k=knn_k, shrinkage=shrinkage)
    scores = score_all(fc, lc, pc, yc, ref)
    val_scores = score_all(fva, lva, pva, yva, ref)

    # Memorization: candidates vs every training image, except the images of each one's own background lesion
    # (its other images show the same skin, so they are no evidence of a copy).
    exclude = background_lesion_rows(train.records, cands.background_ids)
    # Pixels are compared at no more than `pixel_size` px: full-size ISIC images would need tens of GB.
    ptr, pva_pix, pc_pix = (pixel_vectors(shrink(a, pixel_size)) for a in (xtr, xva, xc))
    f_thr, p_thr = thresholds_from_real(fva, pva_pix, ftr, ptr, memorization_quantile)
    memo = check_memorization(fc, pc_pix, ftr, ptr, f_thr, p_thr, exclude)
    # Harmonized candidates are also compared with the real lesion they were made from (at full resolution,
    # inside the pasted region, when generated): a barely-changed source lesion is a near-copy.
    near_source = cands.near_source_copies()
    memo.memorized = memo.memorized | near_source

    info = {
        "candidates": str(candidates),  # lineage follows it to the generation manifest and the synthesizer
        "classifier": classifier.source,
        "backbone": classifier.backbone,
        "resolution": res,
        "real": str(real),
        "n_real_train": len(ytr),
        "n_real_val": len(yva),
        "shrinkage": ref.gaussians.shrinkage,
        "knn_k": knn_k,
        "memorization": {"quantile": memorization_quantile, "pixel_size": min(pixel_size, res),
                         "feature_threshold": f_thr, "pixel_rms_threshold": p_thr,
                         "backgrounds_excluded": int((exclude >= 0).sum()),
                         "source_copies": int(near_source.sum())},
    }
    return ScoredCandidates(cands.ids, cands.classes, cands.paths, yc, scores, memo, fc, val_scores, yva, ftr, ytr,
                            fva, names, xc, info, probs=pc, val_probs=pva)


def quotas(cls_idx: np.ndarray, gamma: float) -> dict[int, int]:
    """Per class index, what keep-fraction GAMMA asks for (`keep_fraction`'s quota)."""
    return {int(c): math.floor(gamma * int((cls_idx == c).sum()) + 0.5) for c in np.unique(cls_idx)}


def choose(sc: ScoredCandidates, *, gamma: float | None = None, calibrate: float | None = None,
           score: str = "mahalanobis", weights: str | None = None,
           eligible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(kept mask, per-sample weights or None, per-class thresholds used). ELIGIBLE (the floor's passes) narrows
    the candidates the rule may keep; memorized ones are never eligible."""
    if (gamma is None) == (calibrate is None):
        raise ConfigError("give exactly one of gamma (keep fraction per class) or calibrate (validation quantile)")
    if score not in OOD_SCORES:
        raise ConfigError(f"unknown score {score!r}; choose one of {', '.join(OOD_SCORES)}")
    ood = as_ood(score, sc.scores[score])
    val_ood = as_ood(score, sc.val_scores[score])
    eligible = ~sc.memo.memorized & (True if eligible is None else np.asarray(eligible, bool))
    thresholds: dict = {}
    if gamma is not None:
        kept = keep_fraction(ood, sc.cls_idx, gamma, eligible)
    else:
        thresholds = calibrate_thresholds(val_ood, sc.val_cls, calibrate)
        missing = sorted({sc.class_names[c] for c in np.unique(sc.cls_idx) if c not in thresholds})
        if missing:
            raise DataError(f"no real validation images of class(es) {', '.join(missing)} to calibrate on")
        kept = keep_calibrated(ood, sc.cls_idx, thresholds, eligible)
    w = None
    if weights is not None:
        if weights not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting {weights!r}; choose one of {', '.join(WEIGHTINGS)}")
        raw = sc.scores["p_intended"] if weights == "p_intended" else typicality(ood, sc.cls_idx, val_ood, sc.val_cls)
        # A floor keeps every kept sample contributing; weights only re-rank what selection already let in.
        w = np.clip(np.nan_to_num(raw, nan=0.0), 0.05, 1.0)
    return kept, w, {sc.class_names[c]: t for c, t in thresholds.items()}


# ---- outputs -----------------------------------------------------------------------------------------------
def write_scores(sc: ScoredCandidates, kept: np.ndarray, out: Path, rejected: list[str] | None = None) -> Path:
    """The scores table; its `floor` column holds the floor tests each candidate failed ('' = passed, or no floor)."""
    path = Selection(out).scores_path
    rejected = rejected or [""] * len(sc.ids)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SCORES_COLUMNS)
        for i, iid in enumerate(sc.ids):
            w.writerow([iid, sc.classes[i], f"{sc.scores['mahalanobis'][i]:.6g}", f"{sc.scores['energy'][i]:.6g}",
                        f"{sc.scores['knn'][i]:.6g}", f"{sc.scores['p_intended'][i]:.6g}",
                        int(sc.memo.memorized[i]), int(kept[i]), rejected[i]])
    # Diagnostics beyond the fixed interface live beside it.
    with open(out / SCORES_DETAIL_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "class", "exact_copy", "nn_feature_dist", "nn_pixel_rms", "nn_train_index"])
        for i, iid in enumerate(sc.ids):
            w.writerow([iid, sc.classes[i], int(sc.memo.exact_copy[i]), f"{sc.memo.feat_nn[i]:.6g}",
                        f"{sc.memo.pixel_nn[i]:.6g}", int(sc.memo.pixel_nn_index[i])])
    return path


def quality_summary(sc: ScoredCandidates, kept: np.ndarray, *, k: int = 3, seed: int = 0) -> dict:
    from .quality import class_quality, frechet_distance, kid, precision_recall

    per_class = {}
    for c in sorted(np.unique(sc.cls_idx)):
        name = sc.class_names[c]
        m = sc.cls_idx == c
        real_tr = sc.train_features[sc.train_cls == c]
        entry = class_quality(real_tr, sc.features[m & kept], n_candidates=int(m.sum()), n_kept=int((m & kept).sum()),
                              n_memorized=int(sc.memo.memorized[m].sum()), k=k, seed=seed)
        # The same figures before selection, and for real validation images (the noise floor at this sample size).
        entry["fd_all_candidates"] = frechet_distance(real_tr, sc.features[m])
        entry["kid_all_candidates"] = kid(real_tr, sc.features[m], seed=seed)[0]
        p_all, r_all = precision_recall(real_tr, sc.features[m], k)
        entry["precision_all_candidates"], entry["recall_all_candidates"] = p_all, r_all
        real_va = sc.val_features[sc.val_cls == c]
        entry["fd_real_val"] = frechet_distance(real_tr, real_va)
        entry["kid_real_val"] = kid(real_tr, real_va, seed=seed)[0]
        entry["n_real_train"], entry["n_real_val"] = len(real_tr), len(real_va)
        entry["exact_copies"] = int(sc.memo.exact_copy[m].sum())
        entry["mean_p_intended_kept"] = float(sc.scores["p_intended"][m & kept].mean()) if (m & kept).any() else math.nan
        entry["mean_p_intended_all"] = float(sc.scores["p_intended"][m].mean())
        per_class[name] = entry
    return per_class


def jsonable(o):
    """O with numpy scalars as Python numbers and non-finite floats as None: what json.dumps writes as strict JSON."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


FEATURE_SPACE_NOTE = ("FD and KID are computed in the penultimate feature space of the real-data classifier, not in "
                      "Inception-v3 space: Inception weights are not available offline. They compare synthetic sets "
                      "with each other and with the real-validation floor (fd_real_val), not with published FID values.")


def write_empty_selection(out, candidates, gate: dict) -> dict:
    """The selection of a run whose synthesizer gate stopped every class: no candidate, nothing kept, and the
    record says which classes the gate stopped (the trainer then sees an empty synthetic set: real only)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    selection = Selection(out)
    selection.write_manifest([], [], np.zeros(0, bool))
    with open(selection.scores_path, "w", newline="") as f:
        csv.writer(f).writerow(SCORES_COLUMNS)
    quality = jsonable({"per_class": {}, "overall": {"n_candidates": 0, "n_kept": 0},
                        "selection": {"rule": "none: no candidates"}, "floor": {"settings": None, "per_class": {}},
                        "gate": gate, "scoring": {"candidates": str(candidates)}})
    selection.write_record(quality)
    return quality


def _clean_rule(sc: ScoredCandidates, eligible: np.ndarray, confidence: float | None, band) -> tuple[np.ndarray, dict]:
    """The cleaning rule (ood.clean) among the ELIGIBLE candidates, and its record."""
    from .clean import DEFAULT_BAND, DEFAULT_CONFIDENCE, clean_mask, kept_vs_chance

    protos = sc.prototypes
    conf, band = confidence or DEFAULT_CONFIDENCE, tuple(band or DEFAULT_BAND)
    kept, reasons = clean_mask(sc.features, sc.probs, sc.cls_idx, sc.memo.memorized, protos, confidence=conf, band=band)
    kept &= eligible
    real_by_class = {c: sc.train_features[sc.train_cls == c] for c in np.unique(sc.cls_idx)}
    return kept, {"confidence": conf, "band": list(band), "removed": {k: int(v.sum()) for k, v in reasons.items()},
                  "per_class": {sc.class_names[c]: e for c, e in kept_vs_chance(
                      real_by_class, sc.features, sc.probs, sc.cls_idx, kept).items()}}


def _requested(candidates) -> dict[str, int] | None:
    """The generation plan's per-class targets, from the candidate set's record (None when it has none)."""
    from ..diffusion.candidate_set import CandidateSet

    cs = CandidateSet(candidates)
    targets = cs.record().get("targets") if cs.record_path.is_file() else None
    return {str(k): int(v) for k, v in targets.items()} if isinstance(targets, dict) else None


def select_candidates(candidates, real, classifier: FeatureModel, out, gamma: float | None = None,
                      calibrate: float | None = None, score: str = "mahalanobis", weights: str | None = None,
                      knn_k: int = 5,
                      shrinkage="ledoit-wolf", memorization_quantile: float = 0.01, splits=None, split_seed: int = 0,
                      inception: str | None = None, report: bool = True, batch_size: int = 256,
                      pixel_size: int = 32, clean: bool = False, clean_confidence: float | None = None,
                      clean_band: tuple[float, float] | None = None, floor: Floor | None = Floor(),
                      gate: dict | None = None) -> dict:
    """Score, apply the floor, select among what passes it, and report; returns the quality summary (also the
    selection's record). FLOOR=None turns the floor off (the record says so). GATE: the synthesizer gate's
    verdict (ood.synth_gate), carried into the record for the report and lineage.

    `clean`: instead of a keep fraction, keep what the cleaning rule keeps (ood.clean: not confidently another
    class, inside the prototype band, not memorized); the record then also compares it with random subsets."""
    if clean and (gamma is not None or calibrate is not None):
        raise ConfigError("--clean selects by itself: give neither --gamma nor --calibrate with it")
    if not clean and (gamma is None) == (calibrate is None):
        raise ConfigError("give exactly one of --gamma (keep fraction per class) or --calibrate (validation quantile)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sc = score_candidates(candidates, real, classifier, splits=splits, split_seed=split_seed, knn_k=knn_k,
                          shrinkage=shrinkage, memorization_quantile=memorization_quantile, batch_size=batch_size,
                          pixel_size=pixel_size)
    fr = apply_floor(sc, floor) if floor is not None else None
    eligible = fr.passed if fr is not None else np.ones(len(sc.ids), bool)
    cleaning, w, thresholds = None, None, {}
    if clean:
        kept, cleaning = _clean_rule(sc, eligible, clean_confidence, clean_band)
    else:
        kept, w, thresholds = choose(sc, gamma=gamma, calibrate=calibrate, score=score, weights=weights,
                                     eligible=eligible)
    write_scores(sc, kept, out, reason_labels(fr.reasons) if fr is not None else None)
    selection = Selection(out)
    selection.write_manifest(sc.paths, sc.classes, kept, w)
    quality = {
        "per_class": quality_summary(sc, kept),
        "overall": {"n_candidates": len(sc.ids), "n_kept": int(kept.sum()),
                    "acceptance_rate": float(kept.mean()) if len(kept) else math.nan,
                    "memorization_rate": float(sc.memo.memorized.mean()) if len(kept) else math.nan},
        "selection": {"score": score, "gamma": gamma, "calibrate": calibrate, "thresholds": thresholds,
                      "weights": weights, "rule": "clean" if clean else ("keep-fraction" if gamma else "calibrated"),
                      "cleaning": cleaning},
        "floor": {"settings": floor.settings() if floor is not None else None,
                  "per_class": floor_summary(sc, fr, kept, quotas(sc.cls_idx, gamma) if gamma else None,
                                             _requested(candidates))},
        "gate": gate,
        "scoring": sc.info,
        "feature_space": "classifier penultimate layer",
        "note": FEATURE_SPACE_NOTE,
    }
    if inception:
        from .quality import inception_fid

        xtr, _ = _real_splits(real, splits, split_seed)[0].arrays(int(sc.info["resolution"]))
        quality["inception_fid"] = {
            sc.class_names[c]: inception_fid(xtr[sc.train_cls == c], sc.images[(sc.cls_idx == c) & kept], inception)
            for c in np.unique(sc.cls_idx) if ((sc.cls_idx == c) & kept).sum() >= 2}
    quality = jsonable(quality)
    selection.write_record(quality)
    if report:
        from .report import write_report

        write_report(sc, kept, quality, out, score=score)
    return quality
