"""The classifier model folder's metadata: one typed schema, read and written only here.

MODEL_DIR/model.pt is a dict: the fields of `ClassifierMeta` plus `state_dict`. Training, evaluation, OOD
scoring, export and monitoring all read it through `read_meta` / `load_classifier`, so a key can no longer be
written under one name and looked for under another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import DataError, MissingInputError

MODEL_FILE = "model.pt"
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
# Written by trainers before this schema: the real training images per class lived in the training config.
_LEGACY_COUNT_KEYS = ("class_counts_train",)


@dataclass(frozen=True)
class ClassifierMeta:
    backbone: str  # timm name
    classes: list[str]  # ISIC names, in output index order
    resolution: int  # input size in px
    mean: list[float] = field(default_factory=lambda: list(DEFAULT_MEAN))  # per channel, 0..1 scale
    std: list[float] = field(default_factory=lambda: list(DEFAULT_STD))
    config: dict = field(default_factory=dict)  # the resolved training config
    data_revision: str | None = None
    # Real training images per class: the monitor's basis for which classes are the tail.
    train_class_counts: dict[str, int] | None = None

    def to_checkpoint(self, state_dict: dict) -> dict:
        return {**asdict(self), "state_dict": state_dict}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, where: str | Path) -> ClassifierMeta:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(ckpt) - known - {"state_dict"})
        if unknown:
            raise DataError(f"{where}: unknown metadata key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        missing = [k for k in ("backbone", "classes", "resolution") if k not in ckpt]
        if missing:
            raise DataError(f"{where}: classifier metadata lacks {', '.join(missing)}")
        values = {k: ckpt[k] for k in known if k in ckpt}
        if values.get("train_class_counts") is None:
            config = values.get("config") or {}
            legacy = next((config[k] for k in _LEGACY_COUNT_KEYS if config.get(k)), None)
            values["train_class_counts"] = legacy
        values["classes"] = list(values["classes"])
        values["resolution"] = int(values["resolution"])
        values["config"] = values.get("config") or {}
        return cls(**values)


def checkpoint_path(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise MissingInputError(f"{path}: no classifier checkpoint (expected {MODEL_FILE} from `tailsynth train classifier`)")
    return path


def read_checkpoint(model_dir: str | Path) -> tuple[ClassifierMeta, dict]:
    """(metadata, state dict) of a classifier model folder or model.pt file."""
    import torch

    path = checkpoint_path(model_dir)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ClassifierMeta.from_checkpoint(ckpt, path), ckpt["state_dict"]


def read_meta(model_dir: str | Path) -> ClassifierMeta:
    return read_checkpoint(model_dir)[0]


def write_checkpoint(meta: ClassifierMeta, state_dict: dict, out_dir: str | Path) -> Path:
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(meta.to_checkpoint(state_dict), out / MODEL_FILE)
    return out / MODEL_FILE
