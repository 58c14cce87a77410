"""The generation stage's output folder, a *candidate set*, and the one place that knows its files.

    OUT/generation.json             the record: schema, the resolved settings (merge compares them across shards)
    OUT/manifest.csv                one row per candidate with its provenance (MANIFEST_COLUMNS, + input paths)
    OUT/GT_FILE                     the same labels in the ISIC layout (the synthetic ground truth file that
                                    `tailsynth.data.isic` names), for `load_source`
    OUT/images/<id>.png             the candidates;  OUT/inputs/  backgrounds, masks, composites (--save-inputs)
    OUT/grid_<class>.png            preview grids

`generate` and the merge write it (`write_candidate_set`, `merge_candidate_sets`); every later stage (gates,
selection, experiments, lineage, the run report, the pipeline components) reads it through `CandidateSet`.

Schema versions: the record's `schema` is `SCHEMA` (`tailsynth.candidate-set/1`). Folders written before the
record carried a schema (no `schema` key, or no generation.json at all, as hand-made test sets) are read as
version 0 when their manifest has the columns a reader needs (`id`, `class`); another schema name, a newer
version, or a manifest without those columns is a `DataError` naming the file and the expected schema.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..data.classes import ISIC2019_CLASSES
from ..data.errors import DataError
from ..data.isic import LAYOUTS, PARTS
from ..errors import ConfigError
from ..stagefolder import StageFolder

SCHEMA_NAME = "tailsynth.candidate-set"
SCHEMA_VERSION = 1
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_VERSION}"
RECORD_FILE = "generation.json"
MANIFEST_FILE = "manifest.csv"
GT_FILE = LAYOUTS[PARTS["synthetic"]][0]  # the ISIC layout's synthetic ground truth (owned by data.isic)
IMAGES_DIR, INPUTS_DIR = "images", "inputs"
MANIFEST_COLUMNS = ["id", "class", "background_id", "background_class", "mask_source", "mask_method",
                    "mask_coverage", "seed", "sampler", "steps", "guidance", "model_hash", "index",
                    "mode", "strength", "source_id", "source_rms"]
INPUT_COLUMNS = ["background_path", "mask_path"]  # with --save-inputs, relative to the folder
REQUIRED_COLUMNS = ("id", "class")
GRID_COUNT = 32


@dataclass(frozen=True)
class CandidateRow:
    """One manifest row, typed where readers compute with it; `fields` keeps every column as written."""

    id: str
    cls: str
    background_id: str = ""  # "" when unknown
    source_id: str = ""  # harmonize: the real lesion pasted in
    source_rms: float = float("nan")  # harmonize: RMS change from that lesion inside its region
    fields: dict = field(default_factory=dict)


class CandidateSet(StageFolder):
    """A candidate folder. Construction checks nothing; `record()`, `rows()` and `validate()` check what they read."""

    SCHEMA_NAME, SCHEMA_VERSION, RECORD = SCHEMA_NAME, SCHEMA_VERSION, RECORD_FILE
    WRITER, KIND = "`tailsynth generate` or `merge-shards`", "candidate set"
    manifest_path = property(lambda self: self.root / MANIFEST_FILE)
    images_dir = property(lambda self: self.root / IMAGES_DIR)

    def image_path(self, iid: str) -> Path:
        for ext in (".png", ".jpg", ".jpeg"):
            p = self.images_dir / f"{iid}{ext}"
            if p.is_file():
                return p
        return self.images_dir / f"{iid}.png"

    def input_path(self, row: CandidateRow | dict, kind: str) -> Path:
        """An input image of a --save-inputs row: kind "background", "mask" or "composite" (harmonize)."""
        fields = row.fields if isinstance(row, CandidateRow) else row
        if kind == "composite":
            return self.root / INPUTS_DIR / f"{fields['id']}_composite.png"
        key = f"{kind}_path"
        if not fields.get(key):
            raise ConfigError(f"{self.manifest_path}: no {key} column (generate with --save-inputs)")
        return self.root / fields[key]

    def record(self) -> dict:
        """generation.json ({} for a version-0 folder without one); a foreign or newer schema is an error."""
        if not self.root.is_dir():
            raise DataError(f"{self.root}: candidate folder not found ({self.expected()})")
        return self.read_record(self.record_path) if self.record_path.is_file() else {}

    def schema_version(self) -> int:
        return self.check_schema(self.record_path, self.record().get("schema"))

    def columns(self) -> list[str]:
        if not self.manifest_path.is_file():
            return []
        with open(self.manifest_path, newline="") as f:
            return list(csv.DictReader(f).fieldnames or [])

    def rows(self) -> list[dict]:
        """The manifest's rows as written (strings), checked for the columns and ids every reader relies on."""
        self.record()
        if not self.manifest_path.is_file():
            return self._ground_truth_rows()
        with open(self.manifest_path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{self.manifest_path}: missing column(s) {', '.join(map(repr, missing))} "
                                f"(header: {','.join(header)}); {self.expected()}")
            rows = list(reader)
        for row_no, row in enumerate(rows, start=2):
            if not (row.get("id") or "").strip() or not (row.get("class") or "").strip():
                raise DataError(f"{self.manifest_path}: row {row_no}: empty id or class")
        _check_unique(self.manifest_path, [r["id"].strip() for r in rows])
        return rows

    def _ground_truth_rows(self) -> list[dict]:
        """A folder with only the ISIC ground truth (no manifest): ids and classes, no provenance."""
        gt = self.root / GT_FILE
        if not gt.is_file():
            others = sorted(p.name for p in self.root.glob("*.*"))[:6]
            raise DataError(f"{self.manifest_path}: not found (nor {GT_FILE}); {self.expected()}; the folder holds "
                            f"{', '.join(others) or 'no files'}")
        from ..data.isic import read_ground_truth

        rows = [{"id": iid, "class": cls} for iid, cls in read_ground_truth(gt)]
        _check_unique(gt, [r["id"] for r in rows])
        return rows

    def read(self) -> list[CandidateRow]:
        """Typed rows (ids, classes, background and harmonize source); numbers that do not parse are errors."""
        out = []
        for row_no, r in enumerate(self.rows(), start=2):
            v = (r.get("source_rms") or "").strip()
            try:
                rms = float(v) if v else float("nan")
            except ValueError:
                raise DataError(f"{self.manifest_path}: row {row_no}: source_rms {v!r} is not a number") from None
            out.append(CandidateRow(r["id"].strip(), r["class"].strip(), (r.get("background_id") or "").strip(),
                                    (r.get("source_id") or "").strip(), rms, r))
        return out

    def model_hashes(self) -> list[str]:
        """The synthesizer weights hashes the manifest names (one for a set from one model)."""
        return sorted({r.get("model_hash") or "" for r in self.rows()} - {""})

    def validate(self) -> list[CandidateRow]:
        """The typed rows, after checking every candidate's image is there."""
        rows = self.read()
        missing = [p for p in (self.image_path(r.id) for r in rows) if not p.is_file()]
        if missing:
            raise DataError(f"{missing[0]}: candidate image missing ({len(missing)} of {len(rows)} missing)")
        return rows


def _check_unique(path: Path, ids: list[str]) -> None:
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: candidate id {dup!r} appears more than once")


def write_candidate_set(out: str | Path, rows: list[dict], columns: list[str], settings: dict) -> CandidateSet:
    """Write the tables and the record of a candidate set whose images are already in OUT/images."""
    cs = CandidateSet(out)
    with open(cs.root / GT_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", *ISIC2019_CLASSES])
        for r in rows:
            w.writerow([r["id"], *("1.0" if c == r["class"] else "0.0" for c in ISIC2019_CLASSES)])
    with open(cs.manifest_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    cs.record_path.write_text(json.dumps({"schema": SCHEMA, **settings}, indent=2) + "\n")
    return cs


def write_empty_candidate_set(out: str | Path, settings: dict) -> CandidateSet:
    """A candidate set with no candidates (no class was to be synthesized, e.g. the synthesizer gate stopped
    every one): the tables with their headers and the record saying why, so that every reader sees an empty set,
    not a missing one."""
    cs = CandidateSet(out)
    cs.images_dir.mkdir(parents=True, exist_ok=True)
    return write_candidate_set(cs.root, [], MANIFEST_COLUMNS, {"classes": [], "targets": {}, **settings})


def write_grids(cs: CandidateSet, rows: list[dict]) -> list[str]:
    """grid_<class>.png: the first GRID_COUNT candidates of each class."""
    from ..data.isic import decode_file
    from .outputs import write_grid

    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["class"], []).append(r["id"])
    written = []
    for c, ids in by_class.items():
        imgs = [decode_file(str(cs.image_path(i))) for i in ids[:GRID_COUNT]]
        write_grid(imgs, cs.root / f"grid_{c}.png")
        written.append(str(cs.root / f"grid_{c}.png"))
    return written


def _check_shards(dirs: list[Path], records: list[dict]) -> None:
    """Shards 1..N of one plan: equal settings but the shard, and every shard exactly once."""
    base = {k: v for k, v in records[0].items() if k != "shard"}
    for d, c in zip(dirs, records):
        diff = sorted(k for k in set(base) | set(c) if k != "shard" and base.get(k) != c.get(k))
        if diff:
            raise DataError(f"{d}: generation settings differ from {dirs[0]} in {', '.join(diff)}")
    shards = [c.get("shard") for c in records]
    ns = {int(s.split("/")[1]) for s in shards if s}
    if None in shards or len(ns) != 1 or sorted(int(s.split("/")[0]) for s in shards) != list(range(1, ns.pop() + 1)):
        raise DataError(f"merge-shards: need exactly shards 1..N of one plan, got {shards}")


def _merged_record(records: list[dict], shards: bool) -> dict:
    """Shards: the plan's settings (shard None). Parts of different plans: the settings they share, plus each."""
    if shards:
        return {**records[0], "shard": None}
    common = {k: v for k, v in records[0].items() if all(k in r and r[k] == v for r in records)}
    return {**common, "parts": records}


def merge_candidate_sets(dirs, out, *, shards: bool = True) -> dict:
    """The one merge of candidate sets into OUT (images, inputs, tables, record, grids).

    shards=True (`merge-shards`): shards 1..N of one plan; rows in plan order, equal to one unsharded run.
    shards=False (the gates' one-folder-per-mode): runs of different plans (one class each); rows in the given order.
    """
    sets = [CandidateSet(d) for d in dirs]
    if not sets:
        raise ConfigError("merge-shards: no shard folders given")
    for cs in sets:
        if not cs.record_path.is_file():
            raise DataError(f"{cs.record_path}: missing; {cs.expected()}")
    records = [{k: v for k, v in cs.record().items() if k != "schema"} for cs in sets]
    if shards:
        _check_shards([cs.root for cs in sets], records)
    columns = sets[0].columns()
    src_rows = [(cs, r) for cs in sets for r in cs.rows()]
    if shards:
        src_rows.sort(key=lambda t: int(t[1]["index"]))
    keys = [r["index"] if shards else r["id"] for _, r in src_rows]
    if len(set(keys)) != len(keys):
        raise DataError(f"merge-shards: shards overlap (duplicate candidate {'index' if shards else 'id'})")
    dest = CandidateSet(out)
    dest.images_dir.mkdir(parents=True, exist_ok=True)
    has_inputs = all(c in columns for c in INPUT_COLUMNS)
    if has_inputs:
        (dest.root / INPUTS_DIR).mkdir(exist_ok=True)
    for cs, r in src_rows:
        shutil.copyfile(cs.image_path(r["id"]), dest.images_dir / f"{r['id']}.png")
        if has_inputs:
            for k in ("background", "mask", "composite"):
                src = cs.input_path(r, k)
                if src.is_file() or k != "composite":
                    shutil.copyfile(src, dest.input_path(r, k))
    rows = [r for _, r in src_rows]
    write_candidate_set(dest.root, rows, columns, _merged_record(records, shards))
    grids = write_grids(dest, rows)
    return {"out": str(dest.root), "n": len(rows), "shards": len(sets), "grids": grids}


__all__ = [
    "GRID_COUNT",
    "GT_FILE",
    "INPUT_COLUMNS",
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "write_empty_candidate_set",
    "RECORD_FILE",
    "SCHEMA",
    "CandidateRow",
    "CandidateSet",
    "merge_candidate_sets",
    "write_candidate_set",
    "write_grids",
]
