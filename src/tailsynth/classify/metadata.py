"""The classifier model folder's metadata: one typed schema, read and written only here.

MODEL_DIR/MODEL_FILE is a dict: the fields of `ClassifierMeta` plus `state_dict`. Training, evaluation, OOD
scoring, export and monitoring all read it through `read_meta` / `load_classifier`, so a key can no longer be
written under one name and looked for under another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import DataError, MissingInputError
from ..hashing import MODEL_FILE  # the file the model version hashes; the folder's other files: `folders`

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
    # CRC-32 of every tensor's bytes, written with the weights: a damaged file whose zip container still opens
    # (torch does not check the records' checksums) is caught at load, naming the first bad tensor.
    weights_crc32: dict[str, int] | None = None

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


def tensor_crc32(state_dict: dict) -> dict[str, int]:
    """CRC-32 of each tensor's raw bytes (zlib runs at GB/s: a few ms for these models)."""
    import zlib

    import torch

    return {k: zlib.crc32(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
            for k, v in state_dict.items()}


def check_weights(state: dict, path: Path, expected: dict[str, int] | None) -> None:
    """Refuse non-finite weights and, where the checkpoint recorded them, tensors whose bytes changed."""
    import torch

    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise DataError(f"{path}: state_dict entry {k!r} is a {type(v).__name__}, not a tensor")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise DataError(f"{path}: tensor {k!r} holds non-finite values (NaN or inf): the weights are damaged")
    if expected is not None:
        got = tensor_crc32(state)
        if set(got) != set(expected):
            raise DataError(f"{path}: the tensors differ from those recorded at save time "
                            f"({sorted(set(got) ^ set(expected))[:3]})")
        bad = next((k for k in expected if got[k] != expected[k]), None)
        if bad is not None:
            raise DataError(f"{path}: tensor {bad!r} does not match the checksum recorded at save time: the file "
                            f"is damaged (re-train or restore it)")


def read_checkpoint(model_dir: str | Path) -> tuple[ClassifierMeta, dict]:
    """(metadata, state dict) of a classifier model folder or its MODEL_FILE. An empty, truncated, foreign or
    damaged file is one clear error naming it."""
    import torch

    path = checkpoint_path(model_dir)
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes), not a classifier checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 -- torch raises many kinds for a torn or foreign file
        raise DataError(f"{path}: not a readable classifier checkpoint ({size} bytes; {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'}); truncated or not written by "
                        f"`tailsynth train classifier`") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise DataError(f"{path}: not a tailsynth classifier checkpoint (expected a dict with metadata and "
                        f"'state_dict', found {type(ckpt).__name__})")
    meta = ClassifierMeta.from_checkpoint(ckpt, path)
    check_weights(ckpt["state_dict"], path, meta.weights_crc32)
    return meta, ckpt["state_dict"]


def read_meta(model_dir: str | Path) -> ClassifierMeta:
    return read_checkpoint(model_dir)[0]


def write_checkpoint(meta: ClassifierMeta, state_dict: dict, out_dir: str | Path) -> Path:
    """MODEL_FILE with the tensors' checksums, written to a temporary name and renamed: a crash mid-write never
    leaves a torn MODEL_FILE behind."""
    import dataclasses
    import os

    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dataclasses.replace(meta, weights_crc32=tensor_crc32(state_dict))
    tmp = out / f".{MODEL_FILE}.{os.getpid()}.tmp"
    torch.save(meta.to_checkpoint(state_dict), tmp)
    os.replace(tmp, out / MODEL_FILE)
    return out / MODEL_FILE
