"""What every stage's output folder shares: a root, and a JSON record whose `schema` is `NAME/VERSION`.

The stage that writes a folder owns its file names and its folder class (`diffusion.candidate_set.CandidateSet`,
`ood.selection.Selection`, `classify.folders`); those classes check their record here, so an old folder (no
schema: version 0, or an older version of the same schema) reads, and a foreign or newer one is a `DataError`
naming the file and the expected schema.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import DataError


class StageFolder:
    """A stage's output folder; subclasses set SCHEMA_NAME, SCHEMA_VERSION, RECORD (the record's file name), WRITER
    (who writes the folder) and KIND (what it is called in errors)."""

    SCHEMA_NAME = ""
    SCHEMA_VERSION = 1
    RECORD = ""
    WRITER = ""
    KIND = "stage folder"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def record_path(self) -> Path:
        return self.root / self.RECORD

    @classmethod
    def schema(cls) -> str:
        return f"{cls.SCHEMA_NAME}/{cls.SCHEMA_VERSION}"

    @classmethod
    def expected(cls) -> str:
        article = "an" if cls.KIND[:1] in "aeiou" else "a"
        return f"expected {article} {cls.KIND} ({cls.schema()}, written by {cls.WRITER})"

    @classmethod
    def check_schema(cls, path: Path, found) -> int:
        """The version of FOUND (None: 0); another schema name or a newer version is an error naming PATH."""
        if found is None:
            return 0
        name, _, version = str(found).partition("/")
        if name == cls.SCHEMA_NAME and version.isdigit() and int(version) <= cls.SCHEMA_VERSION:
            return int(version)
        raise DataError(f"{path}: schema {found!r}; {cls.expected()}")

    @classmethod
    def read_record(cls, path: Path, key: str = "schema") -> dict:
        """A JSON object whose KEY is checked with `check_schema`."""
        try:
            rec = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not JSON ({e}); {cls.expected()}") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}: not a JSON object; {cls.expected()}")
        cls.check_schema(path, rec.get(key))
        return rec
