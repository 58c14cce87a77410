"""Small helpers for the data tests (fault injection on the tiny ISIC folders from conftest)."""

from __future__ import annotations

import csv
from pathlib import Path

GT = "ISIC_2019_Training_GroundTruth.csv"
META = "ISIC_2019_Training_Metadata.csv"


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


def write_rows(path: Path, header: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in header})


def image_file(root: Path, name: str) -> Path:
    return root / "ISIC_2019_Training_Input" / f"{name}.jpg"


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
