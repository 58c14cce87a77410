"""Lesion-grouped stratified splits, k-fold, and a long-tail subsampler.

Every group (lesion) lands in exactly one split: ISIC contains several images of one lesion,
and splitting by image leaks them across train and test.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .records import LesionDataset, Record

# ISIC 2019 training class shares (25,331 images), the reference long tail.
ISIC2019_COUNTS = {"NV": 12875, "MEL": 4522, "BCC": 3323, "BKL": 2624, "AK": 867, "SCC": 628, "VASC": 253, "DF": 239}


def _groups(records: Sequence[Record]) -> dict[str, list[Record]]:
    g: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        g[r.group_id].append(r)
    return g


def _group_label(members: list[Record]) -> str:
    labels = [m.label for m in members]
    return max(sorted(set(labels)), key=labels.count)


def grouped_stratified_assign(
    records: Sequence[Record], fractions: dict[str, float], seed: int = 0
) -> dict[str, str]:
    """image_id -> split name, with each class's groups dealt to splits in proportion to `fractions`.

    Per class, groups are shuffled (seeded) and assigned greedily to the split whose image count is
    furthest below its target, so class proportions match within about one group.
    """
    names = list(fractions)
    w = np.array([fractions[n] for n in names], dtype=float)
    w = w / w.sum()
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[tuple[str, list[Record]]]] = defaultdict(list)
    for gid, members in sorted(_groups(records).items()):
        by_class[_group_label(members)].append((gid, members))
    out: dict[str, str] = {}
    for cls in sorted(by_class):
        groups = by_class[cls]
        order = rng.permutation(len(groups))
        total = sum(len(m) for _, m in groups)
        filled = np.zeros(len(names))
        # Large groups first keeps the greedy fill close to the targets.
        order = sorted(order, key=lambda i: -len(groups[i][1]))
        for i in order:
            gid, members = groups[i]
            deficit = w * total - filled
            k = int(np.argmax(deficit))
            filled[k] += len(members)
            for m in members:
                out[m.image_id] = names[k]
    return out


def split_dataset(ds: LesionDataset, val: float = 0.15, test: float = 0.15, seed: int = 0) -> LesionDataset:
    fr = {"train": 1.0 - val - test, "val": val}
    if test > 0:
        fr["test"] = test
    return ds.with_splits(grouped_stratified_assign(ds.records, fr, seed))


def kfold_assign(records: Sequence[Record], k: int = 5, seed: int = 0) -> dict[str, int]:
    """image_id -> fold index 0..k-1, grouped and stratified."""
    a = grouped_stratified_assign(records, {str(i): 1.0 for i in range(k)}, seed)
    return {iid: int(f) for iid, f in a.items()}


def fold_assignments(records: Sequence[Record], k: int, seed: int = 0,
                     inner_val: float = 0.15) -> dict[str, dict[str, str]]:
    """The one k-fold layout: {"fold<i>": image_id -> split} where fold i (kfold_assign) is `test`, the reported
    part, and a grouped stratified `inner_val` share of the other folds is `val` (where the epoch and post-hoc τ are
    chosen), the rest `train`. Used by the experiments (tailsynth.evaluation) and `tailsynth data split --kfold`."""
    if k < 2:
        raise ConfigError(f"k-fold needs k >= 2, got {k}")
    if not 0 < inner_val < 1:
        raise ConfigError(f"inner_val must lie in (0, 1), got {inner_val}")
    fold_of = kfold_assign(records, k, seed)
    out = {}
    for i in range(k):
        rest = [r for r in records if fold_of[r.image_id] != i]
        inner = grouped_stratified_assign(rest, {"train": 1 - inner_val, "val": inner_val}, seed + 1 + i)
        out[f"fold{i}"] = {**inner, **{r.image_id: "test" for r in records if fold_of[r.image_id] == i}}
    return out


def ensure_splits(ds: LesionDataset, seed: int = 0, val: float = 0.15, test: float = 0.15) -> LesionDataset:
    """A dataset with train/val splits: as given by the source, or made here (grouped, stratified)."""
    if "train" in ds.splits and "val" in ds.splits:
        return ds
    return split_dataset(ds, val=val, test=test, seed=seed)


def longtail_targets(counts: dict[str, int], imbalance_ratio: float) -> dict[str, int]:
    """Per-class counts of an exponential long tail with head/tail = `imbalance_ratio`.

    Classes are ranked by their ISIC 2019 size (NV head ... DF tail). The tail count is the largest integer
    for which every class has enough images, and the head is round(tail * ratio), so the realised ratio is
    the target up to one image of the head.
    """
    if imbalance_ratio < 1:
        raise ConfigError(f"imbalance ratio must be >= 1, got {imbalance_ratio}")
    classes = [c for c, n in counts.items() if n > 0]
    ranked = sorted(classes, key=lambda c: -ISIC2019_COUNTS.get(c, 0))
    span = max(1, len(ranked) - 1)
    # n_c = tail * ratio^((C-1-rank)/(C-1)): rank 0 (head) gets tail*ratio, the last rank gets tail.
    factor = {c: imbalance_ratio ** ((span - i) / span) for i, c in enumerate(ranked)}
    tail = min(int(np.floor(counts[c] / factor[c] + 1e-9)) for c in ranked)
    if tail < 1:
        worst = min(ranked, key=lambda c: counts[c] / factor[c])
        raise ConfigError(
            f"class {worst} has {counts[worst]} images, too few for imbalance ratio {imbalance_ratio} "
            f"(needs {int(np.ceil(factor[worst]))})"
        )
    return {c: round(tail * factor[c]) for c in ranked}


def longtail_subsample(
    ds: LesionDataset,
    imbalance_ratio: float | None = None,
    proportions: dict[str, float] | None = None,
    seed: int = 0,
) -> LesionDataset:
    """Subsample a balanced source into a long tail.

    `proportions`: target class shares (default ISIC 2019's); the largest count that fits every class is kept.
    `imbalance_ratio`: exponential profile (see `longtail_targets`), classes ranked by their ISIC 2019 size.
    Whole groups are kept or dropped, so lesions never straddle the cut.
    """
    counts = ds.class_counts()
    classes = [c for c in ds.classes if counts.get(c, 0) > 0]
    if imbalance_ratio is not None:
        targets = longtail_targets(counts, imbalance_ratio)
    else:
        prop = proportions or {c: ISIC2019_COUNTS.get(c, 0) for c in classes}
        tot = sum(prop.get(c, 0) for c in classes)
        share = {c: prop.get(c, 0) / tot for c in classes}
        scale = min(counts[c] / share[c] for c in classes if share[c] > 0)
        targets = {c: max(1, round(scale * share[c])) for c in classes if share[c] > 0}
    return ds.subset(_pick_groups(ds.records, targets, np.random.default_rng(seed)))


def _pick_groups(records: Sequence[Record], targets: dict[str, int], rng: np.random.Generator) -> list[Record]:
    """Whole groups of each class in `targets`, drawn in a seeded random order until the class reaches its target
    image count (a group that would overshoot is skipped unless the class has none yet); other classes are dropped."""
    keep: list[Record] = []
    by_class: dict[str, list[list[Record]]] = defaultdict(list)
    for gid, members in sorted(_groups(records).items()):
        by_class[_group_label(members)].append(members)
    for c, groups in sorted(by_class.items()):
        if c not in targets:
            continue
        n = 0
        for i in rng.permutation(len(groups)):
            if n >= targets[c]:
                break
            g = groups[i]
            if n + len(g) > targets[c] and n > 0:
                continue
            keep.extend(g)
            n += len(g)
    return keep


# A class never drops below this many training images under `train_fraction` (or keeps all it has, if fewer), so
# every class stays learnable and present in the classifier's output at small fractions.
MIN_TRAIN_PER_CLASS = 5


def check_train_fraction(fraction) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"train_fraction must be a number in (0, 1], got {fraction!r}")
    return float(fraction)


def subsample_train(ds: LesionDataset, fraction: float, seed: int = 0,
                    min_per_class: int = MIN_TRAIN_PER_CLASS) -> LesionDataset:
    """Keep a stratified `fraction` of the train split's images (whole lesion groups, about round(fraction * n_c)
    per class, at least `min_per_class`); val and test are untouched so arms trained on different fractions are
    scored on the same images. Deterministic for a seed, and nested: with one image per lesion, a smaller fraction's
    train set is a subset of a larger one's. The dropped images leave the dataset (and so the manifest)."""
    check_train_fraction(fraction)
    if fraction == 1:
        return ds
    train = [r for r in ds.records if r.split == "train"]
    counts = ds.class_counts("train")
    targets = {c: min(n, max(min_per_class, round(fraction * n))) for c, n in counts.items() if n > 0}
    kept = {r.image_id for r in _pick_groups(train, targets, np.random.default_rng(seed))}
    return ds.subset(r for r in ds.records if r.split != "train" or r.image_id in kept)


def write_split_manifest(ds: LesionDataset, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "label", "group_id", "split"])
        for r in ds.records:
            w.writerow([r.image_id, r.label, r.group_id, r.split])
    return path


def groups_crossing_splits(records: Sequence[Record]) -> dict[str, list[str]]:
    """group_id -> sorted splits, for every group found in more than one split."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in records:
        seen[r.group_id].add(r.split)
    return {g: sorted(s) for g, s in seen.items() if len(s) > 1}


def read_id_list(path: str | Path) -> set[str]:
    """image ids from a CSV with an `image_id` column (e.g. the validator's quarantine.csv)."""
    from .errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: id list not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "image_id" not in (reader.fieldnames or []):
            raise DataError(f"{path}: missing column 'image_id'")
        return {row["image_id"] for row in reader}


def split_source(
    source: str | Path,
    out: str | Path,
    val: float = 0.15,
    test: float | None = None,
    seed: int = 0,
    kfold: int | None = None,
    imbalance_ratio: float | None = None,
    isic_proportions: bool = False,
    exclude: str | Path | None = None,
    resplit: bool = False,
    part: str | None = None,
) -> dict:
    """Read SOURCE, optionally drop excluded ids and subsample to a long tail, split, write the manifest CSV.

    Sources with their own train/val (MedMNIST) keep them unless `resplit`. `test` defaults to 0.15 (0 with
    `kfold`). With `kfold`, every image is dealt into k grouped, stratified folds (the manifest's `split` column
    reads `fold<i>`), and `<out stem>.fold<i>.csv` is fold i in the experiments' layout (fold_assignments): fold i
    is `test`, a `val` share of the other folds is the inner validation split, the rest `train`; ready for
    `--splits`.
    """
    from .source import load_source

    if kfold and test:
        raise ConfigError(f"--kfold: fold i is the test part of manifest i, so a held-out test share ({test}) on top "
                          "has no place; leave --test out")
    test = (0.0 if kfold else 0.15) if test is None else test
    if imbalance_ratio is not None and isic_proportions:
        raise ConfigError("give either an imbalance ratio or ISIC proportions, not both")
    for name, fr in (("val", val), ("test", test)):
        if not 0 <= fr < 1:
            raise ConfigError(f"{name} fraction must be in [0, 1), got {fr}")
    if val + test >= 1:
        raise ConfigError(f"val + test = {val + test} leaves nothing to train on")
    ds = load_source(source, part=part)
    n_read = len(ds)
    excluded = 0
    if exclude is not None:
        drop = read_id_list(exclude)
        keep = [r for r in ds.records if r.image_id not in drop]
        excluded = len(ds) - len(keep)
        ds = ds.subset(keep)
    if imbalance_ratio is not None or isic_proportions:
        ds = longtail_subsample(ds, imbalance_ratio=imbalance_ratio, seed=seed)
    out = Path(out)
    written = [out]
    if kfold:
        layouts = fold_assignments(ds.records, kfold, seed, inner_val=val)
        fold_of = {iid: name for name, assign in layouts.items() for iid, s in assign.items() if s == "test"}
        for name, assign in layouts.items():
            fold_out = out.with_name(f"{out.stem}.{name}{out.suffix}")
            written.append(write_split_manifest(ds.with_splits(assign), fold_out))
        ds = ds.with_splits(fold_of)
        write_split_manifest(ds, out)
    else:
        has_own = "train" in ds.splits and "val" in ds.splits
        if resplit or not has_own:
            ds = split_dataset(ds, val=val, test=test, seed=seed)
        write_split_manifest(ds, out)
    crossing = groups_crossing_splits(ds.records)
    if crossing:  # cannot happen by construction; a guard against a manifest that would leak lesions
        g, s = next(iter(crossing.items()))
        raise AssertionError(f"lesion {g} landed in splits {s}")
    return {
        "source": str(source),
        "manifests": [str(p) for p in written],
        "read": n_read,
        "excluded": excluded,
        "kept": len(ds),
        "splits": {s: ds.class_counts(s) for s in ds.splits},
    }
