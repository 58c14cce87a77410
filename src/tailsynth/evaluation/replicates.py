"""Replicates of an experiment: (image set, seed) pairs, each with a split manifest of three parts.

  train  the images the classifier learns from,
  val    an inner split of the training part, on which the trainer picks its epoch (and post-hoc τ is tuned),
  test   the reported images, never used for any choice.
`--folds k`: lesion-grouped stratified k-fold over the source's train + val in the one fold layout
(`tailsynth.data.splits.fold_assignments`): fold i is `test`, an inner grouped stratified share of the other
folds is `val`. Without folds: the source's own val split is `test` and the inner `val` is cut from its train split.
`final`: one image set, "all": every train/val image of the source is trained on (an inner `val` still picks the
epoch) and nothing is reported here; the final model is read on another source only (`--eval-data`).
Either way each seed trains one model per image set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class Replicate:
    group: str  # the image set: "fold0".., "val" or "all"
    seed: int
    manifest: Path
    reported: bool = True  # False for "all": no `test` part, the other source is the only evaluation

    @property
    def tag(self) -> str:
        return f"{self.group}_seed{self.seed}"


def _image_sets(ds, data, folds: int | None, inner_val: float, split_seed: int,
                final: bool = False) -> dict[str, dict[str, str]]:
    """{image set name: image_id -> train/val/test}."""
    from ..data.errors import DataError
    from ..data.splits import fold_assignments, grouped_stratified_assign

    if final:
        pool = [r for r in ds.records if r.split in ("train", "val", "all")]
        if not pool:
            raise DataError(f"{data}: no train/val images to train the final model on (splits {ds.splits})")
        return {"all": grouped_stratified_assign(pool, {"train": 1 - inner_val, "val": inner_val}, split_seed)}
    if folds:
        pool = [r for r in ds.records if r.split in ("train", "val", "all")]
        if not pool:
            raise DataError(f"{data}: no train/val images to cross-validate over (splits {ds.splits})")
        return fold_assignments(pool, folds, split_seed, inner_val=inner_val)
    train = [r for r in ds.records if r.split == "train"]
    test = [r for r in ds.records if r.split == "val"]
    if not train or not test:
        raise DataError(f"{data}: without --folds the source needs its own train and val splits (has "
                        f"{ds.splits}); pass --folds or a --splits manifest")
    inner = grouped_stratified_assign(train, {"train": 1 - inner_val, "val": inner_val}, split_seed)
    return {"val": {**inner, **{r.image_id: "test" for r in test}}}


def make_replicates(data, out: Path, *, folds: int | None, seeds, splits=None, inner_val: float = 0.15,
                    split_seed: int = 0, final: bool = False) -> list[Replicate]:
    """Write one split manifest per image set under OUT/splits and return every (image set, seed) replicate."""
    from ..data import load_source
    from ..data.splits import write_split_manifest

    if not 0 < inner_val < 1:
        raise ConfigError(f"inner_val must lie in (0, 1), got {inner_val}")
    if folds and folds < 2:
        raise ConfigError(f"--folds needs k >= 2, got {folds}")
    if folds and final:
        raise ConfigError("--final trains once on all of the data; it takes no --folds")
    ds = load_source(data, splits=splits)
    reps = []
    for name, assign in _image_sets(ds, data, folds, inner_val, split_seed, final).items():
        man = write_split_manifest(ds.with_splits(assign), Path(out) / "splits" / f"{name}.csv")
        reps += [Replicate(name, int(s), man, reported=not final) for s in seeds]
    return reps
