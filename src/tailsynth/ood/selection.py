"""The selection stage's output folder, a *selection*, and the one place that knows its files.

    OUT/quality.json           the record: schema, per-class statistics, the selection rule and its settings
    OUT/selected_manifest.csv  the kept candidates in the trainer's synthetic-manifest format `path,class[,weight]`
    OUT/scores.csv             per candidate: OOD scores, p(intended), memorized, kept (SCORES_COLUMNS)
    OUT/scores_detail.csv      memorization diagnostics beside it
    OUT/images/                the kept images once the selection carries them (`localize`)

`select_candidates` writes it; training, the pipeline components, lineage, the model card's provenance and the
run report read it through `Selection`.

Schema versions: the record's `schema` is `SCHEMA` (`tailsynth.selection/1`). A record without `schema` (written
before it carried one) is read as version 0; the synthesizer gates' record (`format: tailsynth-synth-quality/...`),
another schema or a newer version is a `DataError` naming the file and the expected schema.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.errors import DataError
from ..stagefolder import StageFolder

SCHEMA_NAME = "tailsynth.selection"
SCHEMA_VERSION = 1
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_VERSION}"
RECORD_FILE = "quality.json"
MANIFEST_FILE = "selected_manifest.csv"
SCORES_FILE = "scores.csv"
SCORES_DETAIL_FILE = "scores_detail.csv"
IMAGES_DIR = "images"
# `floor`: the floor tests (ood.floor) a candidate failed, '+'-joined; '' when it passed or no floor was applied.
SCORES_COLUMNS = ["id", "class", "mahalanobis", "energy", "knn", "p_intended", "memorized", "kept", "floor"]


@dataclass(frozen=True)
class SelectedImage:
    path: Path  # absolute, or resolved against the folder
    cls: str
    weight: float | None
    row: int  # line in the manifest (header is 1)


class Selection(StageFolder):
    """A selection folder. Construction checks nothing; `record()` and `entries()` check what they read."""

    SCHEMA_NAME, SCHEMA_VERSION, RECORD = SCHEMA_NAME, SCHEMA_VERSION, RECORD_FILE
    WRITER, KIND = "`tailsynth select`", "selection"
    manifest_path = property(lambda self: self.root / MANIFEST_FILE)
    scores_path = property(lambda self: self.root / SCORES_FILE)

    def has_record(self) -> bool:
        return self.record_path.is_file()

    def record(self) -> dict:
        """quality.json; a missing file, a foreign record or a newer schema is an error naming the file."""
        if not self.record_path.is_file():
            raise DataError(f"{self.record_path}: not found; {self.expected()}")
        rec = self.read_record(self.record_path)
        self.check_schema(self.record_path, rec.get("format"))  # the gates' record says what it is under `format`
        return rec

    def manifest(self) -> Path:
        """The trainer's synthetic manifest inside the folder (checked present)."""
        if not self.manifest_path.is_file():
            raise DataError(f"{self.manifest_path}: no selected-synthetic manifest; {self.expected()}")
        return self.manifest_path

    def _read_manifest(self) -> tuple[list[str], list[dict]]:
        with open(self.manifest(), newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        missing = [c for c in ("path", "class") if c not in fields]
        if missing:
            raise DataError(f"{self.manifest_path}: missing column(s) {', '.join(map(repr, missing))} "
                            f"(header: {','.join(fields)}); {self.expected()}")
        return fields, rows

    def entries(self, check_images: bool = False) -> list[SelectedImage]:
        """The kept images; with CHECK_IMAGES a missing one is an error naming the manifest row."""
        _, rows = self._read_manifest()
        out = []
        for i, row in enumerate(rows):
            p = Path(row["path"])
            p = p if p.is_absolute() else self.root / p
            if check_images and not p.is_file():
                raise DataError(f"{self.manifest_path}: row {i + 2}: image {p} not found")
            w = (row.get("weight") or "").strip()
            out.append(SelectedImage(p, row["class"], float(w) if w else None, i + 2))
        return out

    def images_by_class(self) -> dict[str, list[Path]]:
        by_class: dict[str, list[Path]] = {}
        for e in self.entries():
            by_class.setdefault(e.cls, []).append(e.path)
        return by_class

    def localize(self) -> Path:
        """Copy the images the manifest points at into OUT/images and rewrite it with relative paths.

        Selection lists absolute paths into the candidate set; on a cluster each stage sees only its own inputs,
        so the selected set must carry its images to be usable by the trainer and by DVC."""
        fields, rows = self._read_manifest()
        img_dir = self.root / IMAGES_DIR
        img_dir.mkdir(exist_ok=True)
        for i, row in enumerate(rows):
            src = Path(row["path"])
            if not src.is_absolute():
                src = self.root / src
            if src.resolve().parent == img_dir.resolve():
                continue
            if not src.is_file():
                raise DataError(f"{self.manifest_path}: row {i + 2}: image {src} not found")
            dest = img_dir / f"{i:06d}_{src.name}"
            shutil.copyfile(src, dest)
            row["path"] = str(dest.relative_to(self.root))
        _write_rows(self.manifest_path, fields, rows)
        return self.manifest_path

    def write_manifest(self, paths, classes, kept: np.ndarray, weights: np.ndarray | None = None) -> Path:
        return write_manifest(paths, classes, kept, self.manifest_path, weights)

    def write_record(self, quality: dict, indent: int = 2) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.record_path.write_text(json.dumps({"schema": SCHEMA, **quality}, indent=indent))
        return self.record_path


def _write_rows(path: Path, fields: list[str], rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def write_manifest(paths, classes, kept: np.ndarray, out_csv: Path, weights: np.ndarray | None = None) -> Path:
    """A trainer's synthetic manifest of the KEPT candidates at OUT_CSV (the selection's, or an experiment arm's);
    absolute paths so the CSV survives being moved."""
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "weight"] if weights is not None else ["path", "class"])
        for i in np.flatnonzero(kept):
            row = [str(Path(paths[i]).resolve()), classes[i]]
            if weights is not None:
                row.append(f"{weights[i]:.4f}")
            w.writerow(row)
    return out_csv
