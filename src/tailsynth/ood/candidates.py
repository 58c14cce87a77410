"""A candidate folder written by `tailsynth generate`, as the arrays selection scores.

The folder, its files and their schema are the generation stage's (`tailsynth.diffusion.candidate_set`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..diffusion.candidate_set import CandidateSet

# A harmonized lesion whose pixels moved less than this RMS (0..1 scale, about 5 grey levels) from the pasted
# real lesion is that lesion with a little noise: a near-copy, not a new sample.
SOURCE_COPY_RMS = 0.02


@dataclass
class Candidates:
    root: Path
    ids: list[str]
    classes: list[str]  # intended ISIC class per candidate
    paths: list[Path]
    background_ids: list[str]  # "" when unknown
    source_ids: list[str] | None = None  # harmonize: the real lesion pasted in ("" otherwise)
    source_rms: np.ndarray | None = None  # harmonize: RMS change from that lesion inside its region (nan otherwise)

    def near_source_copies(self, threshold: float | None = None) -> np.ndarray:
        """Harmonized candidates that barely moved from the real lesion they were made from."""
        threshold = SOURCE_COPY_RMS if threshold is None else threshold
        if self.source_rms is None:
            return np.zeros(len(self.ids), bool)
        return np.nan_to_num(self.source_rms, nan=np.inf) < threshold

    def __len__(self) -> int:
        return len(self.ids)

    def images(self, size: int) -> np.ndarray:
        from ..data.isic import decode_file
        from ..data.records import resize_rgb

        out = np.empty((len(self.ids), size, size, 3), np.uint8)
        for i, p in enumerate(self.paths):
            img = decode_file(str(p))
            out[i] = img if img.shape[:2] == (size, size) else resize_rgb(img, size)
        return out


def read_candidates(gen_dir: str | Path) -> Candidates:
    """The candidate set at GEN_DIR as arrays for scoring (every image checked present)."""
    cs = CandidateSet(gen_dir)
    rows = cs.validate()
    return Candidates(cs.root, [r.id for r in rows], [r.cls for r in rows], [cs.image_path(r.id) for r in rows],
                      [r.background_id for r in rows], [r.source_id for r in rows],
                      np.array([r.source_rms for r in rows], dtype=np.float64))
