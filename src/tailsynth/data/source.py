"""Open any supported data source by path."""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import DataError
from .ham import is_ham_folder, read_ham_folder
from .isic import is_isic_folder, read_isic_folder
from .medmnist import read_npz
from .records import LesionDataset


def detect_format(source: str | Path) -> str:
    p = Path(source)
    if p.suffix == ".npz":
        return "medmnist"
    if is_ham_folder(p):
        return "ham10000"
    if is_isic_folder(p):
        return "isic2019"
    if not p.exists():
        raise DataError(f"{p}: data source not found")
    raise DataError(f"{p}: unknown data source (expected an .npz file, a HAM10000 folder with HAM10000_metadata.csv or a folder in ISIC 2019 layout)")


def load_source(source: str | Path, splits: str | Path | None = None, part: str | None = None) -> LesionDataset:
    """Read SOURCE; with `splits` (a manifest CSV `image_id,split`), re-assign splits from it.

    `part` ("training"/"test") picks the ground-truth table of an ISIC folder holding both.
    """
    fmt = detect_format(source)
    if fmt == "medmnist":
        ds = read_npz(source)
    elif fmt == "ham10000":
        ds = read_ham_folder(source)
    else:
        ds = read_isic_folder(source, part=part)
    if splits is not None:
        ds = ds.with_splits(read_split_manifest(splits))
    return ds


def source_in(artifact_dir: str | Path) -> Path:
    """The data source inside a data artifact folder (the .npz file, or the folder itself)."""
    d = Path(artifact_dir)
    if d.is_file():
        return d
    if not d.is_dir():
        raise DataError(f"{d}: data artifact not found")
    npz = sorted(d.glob("*.npz"))
    if len(npz) > 1:
        raise DataError(f"{d}: more than one .npz in the data artifact ({[p.name for p in npz]})")
    return npz[0] if npz else d


def read_split_manifest(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split manifest not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for col in ("image_id", "split"):
            if col not in (reader.fieldnames or []):
                raise DataError(f"{path}: missing column {col!r}")
        return {row["image_id"]: row["split"] for row in reader}


def default_data_source() -> Path | None:
    """The shared real data beside the project, or $TAILSYNTH_DATA."""
    import os

    env = os.environ.get("TAILSYNTH_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data"
        if (parent / "pyproject.toml").is_file() and cand.is_dir():
            return cand
    cand = Path.cwd().parent / "shared" / "data"
    return cand if cand.is_dir() else None
