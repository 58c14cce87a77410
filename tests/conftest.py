"""Shared fixtures: the real data beside the project (skipped when absent) and tiny generated data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TAILSYNTH_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Keep the 2-core CI machine responsive when several torch processes run.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data beside the project)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def dermamnist_npz() -> Path:
    return _need(SHARED / "dermamnist" / "dermamnist.npz")


@pytest.fixture(scope="session")
def isic_sample() -> Path:
    return _need(SHARED / "isic2019-sample180")


from tailsynth_testdata import CLASSES, make_ham_folder, make_isic_folder, make_npz  # noqa: E402,F401


@pytest.fixture
def tiny_isic(tmp_path) -> Path:
    labels = ["NV"] * 12 + ["MEL"] * 8 + ["BCC"] * 6 + ["AK"] * 4 + ["BKL"] * 6 + ["DF"] * 3 + ["VASC"] * 3 + ["SCC"] * 3
    lesions = [f"HAM_{i // 2:07d}" for i in range(len(labels))]  # pairs of images share a lesion
    return make_isic_folder(tmp_path / "isic", labels, lesions=lesions)


@pytest.fixture(scope="session")
def ham10000() -> Path:
    return _need(SHARED / "ham10000")


# Images per lesion cycle 1, 2, 3, so most classes hold multi-image lesions.
TINY_HAM_LESIONS = {"MEL": 6, "NV": 12, "BCC": 5, "AK": 5, "BKL": 5, "DF": 5, "VASC": 5}


@pytest.fixture
def tiny_ham(tmp_path) -> Path:
    return make_ham_folder(tmp_path / "ham", TINY_HAM_LESIONS)


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    return make_npz(tmp_path / "tiny.npz")
