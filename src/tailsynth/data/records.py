"""One record model for every source (ISIC 2019 folders, MedMNIST npz, synthetic sets).

Images are decoded lazily: a record holds a path or an array index, never pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import ConfigError
from .classes import canonical_order


@dataclass(frozen=True)
class Record:
    image_id: str
    label: str  # ISIC 2019 class name
    group_id: str  # lesion id; the image id when the source has none
    split: str  # "train", "val", "test" or "all"
    path: str | None = None  # image file, for folder sources
    index: int | None = None  # row in the source array, for npz sources
    meta: dict = field(default_factory=dict, compare=False, hash=False)


class LesionDataset:
    """Records plus a lazy image loader.

    `loader(record) -> HxWx3 uint8 RGB` at the source's native size; `image()` resizes on request.
    """

    def __init__(
        self,
        records: Sequence[Record],
        source: str,
        fmt: str,
        loader: Callable[[Record], np.ndarray],
        classes: Sequence[str] | None = None,
        native_size: int | None = None,
    ):
        self.records = list(records)
        self.source = str(source)
        self.format = fmt
        self._loader = loader
        self.classes = list(classes) if classes else canonical_order({r.label for r in self.records})
        self.native_size = native_size

    # ---- views -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def splits(self) -> list[str]:
        order = ["train", "val", "test", "all"]
        present = {r.split for r in self.records}
        return [s for s in order if s in present] + sorted(present - set(order))

    def subset(self, records: Iterable[Record]) -> LesionDataset:
        return LesionDataset(list(records), self.source, self.format, self._loader, self.classes, self.native_size)

    def split(self, name: str) -> LesionDataset:
        return self.subset(r for r in self.records if r.split == name)

    def with_splits(self, assignment: dict[str, str]) -> LesionDataset:
        """Re-label records' splits from an image_id -> split mapping (ids not in it are dropped)."""
        return self.subset(replace(r, split=assignment[r.image_id]) for r in self.records if r.image_id in assignment)

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        counts = {c: 0 for c in self.classes}
        for r in self.records:
            if split is None or r.split == split:
                counts[r.label] = counts.get(r.label, 0) + 1
        return counts

    def stats(self) -> dict:
        return {
            "source": self.source,
            "format": self.format,
            "splits": {s: self.class_counts(s) for s in self.splits},
        }

    def labels(self) -> np.ndarray:
        """Class indices into `self.classes`."""
        idx = {c: i for i, c in enumerate(self.classes)}
        return np.array([idx[r.label] for r in self.records], dtype=np.int64)

    # ---- pixels ------------------------------------------------------------------------------
    def image(self, record: Record, size: int | None = None) -> np.ndarray:
        img = self._loader(record)
        if size is not None and (img.shape[0] != size or img.shape[1] != size):
            img = resize_rgb(img, size)
        return img

    def arrays(self, size: int | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All images as one N x S x S x 3 uint8 array, and class indices."""
        size = size or self.native_size
        if size is None:
            raise ConfigError(f"{self.source}: images have no common native size; pass size=")
        out = np.empty((len(self.records), size, size, 3), dtype=np.uint8)
        it: Iterable = enumerate(self.records)
        if progress:
            from rich.progress import track

            it = track(list(it), description=f"decoding {len(self.records)} images")
        for i, r in it:
            out[i] = self.image(r, size)
        return out, self.labels()


def resize_rgb(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
