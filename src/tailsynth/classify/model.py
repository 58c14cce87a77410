"""The classifier model folder: one format shared by training, evaluation, OOD scoring, export and monitoring.

Its metadata schema is `tailsynth.classify.metadata.ClassifierMeta`; this module builds, saves, loads and runs
the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..hashing import model_version  # noqa: F401  (torch-free, shared by serving and monitoring)
from .metadata import DEFAULT_MEAN, DEFAULT_STD, MODEL_FILE, ClassifierMeta, read_checkpoint, write_checkpoint  # noqa: F401


def build_backbone(backbone: str, num_classes: int, pretrained_path: str | None = None, pretrained: str | None = None,
                   **kwargs) -> torch.nn.Module:
    import timm

    if pretrained and pretrained_path:
        from ..errors import ConfigError

        raise ConfigError("pretrained and pretrained_path are exclusive: give the package weights or a file, not both")
    # Never reach a hub: weights are trained here, loaded from a local file, or shipped inside a package.
    model = timm.create_model(backbone, pretrained=False, num_classes=num_classes, **kwargs)
    if pretrained:
        from .pretrained import apply_pretrained

        apply_pretrained(model, backbone, pretrained)
    if pretrained_path:
        state = torch.load(pretrained_path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        own = model.state_dict()
        # A head trained for another label set has other shapes: keep only what fits.
        filtered = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(filtered, strict=False)
    return model


def save_classifier(model: torch.nn.Module, out_dir: str | Path, *, backbone: str, classes: Sequence[str],
                    resolution: int, mean=DEFAULT_MEAN, std=DEFAULT_STD, config: dict | None = None,
                    data_revision: str | None = None, train_class_counts: dict[str, int] | None = None) -> Path:
    meta = ClassifierMeta(backbone=backbone, classes=list(classes), resolution=int(resolution), mean=list(mean),
                          std=list(std), config=config or {}, data_revision=data_revision,
                          train_class_counts={c: int(n) for c, n in train_class_counts.items()}
                          if train_class_counts else None)
    return write_checkpoint(meta, {k: v.detach().cpu() for k, v in model.state_dict().items()}, out_dir)


def load_classifier(model_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, ClassifierMeta]:
    """(model in eval mode, its metadata)."""
    meta, state = read_checkpoint(model_dir)
    model = build_backbone(meta.backbone, len(meta.classes))
    model.load_state_dict(state)
    model.to(device).eval()
    return model, meta


def preprocess(images: np.ndarray, meta: ClassifierMeta) -> torch.Tensor:
    """N x H x W x 3 uint8 at meta.resolution -> normalised float N x 3 x H x W."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.std).view(1, 3, 1, 1)
    return (x - mean) / std


def inference_precision(meta: ClassifierMeta, device: str = "cpu", precision: str | None = None):
    """The precision choice for running this model: `precision`, else the one it was trained with (auto measures
    inference on its own, so a model trained in fp32 may still infer in bf16 where that is faster)."""
    from .precision import INFER_BATCH, resolve

    return resolve(precision if precision is not None else meta.config.get("precision"), None,
                   backbone=meta.backbone, resolution=meta.resolution, batch_size=INFER_BATCH, device=device,
                   purpose="infer")


@torch.no_grad()
def predict_arrays(model: torch.nn.Module, meta: ClassifierMeta, images: np.ndarray, batch_size: int = 256,
                   features: bool = False, precision: str | None = None):
    """Softmax probabilities (and penultimate features when asked) for uint8 images at the model's resolution,
    in the precision of `inference_precision` (logits and features come back as fp32)."""
    choice = inference_precision(meta, "cpu" if next(model.parameters()).device.type == "cpu" else "cuda", precision)
    dtype = choice.autocast_dtype
    dev = next(model.parameters()).device
    probs, feats, logits_all = [], [], []
    for i in range(0, len(images), batch_size):
        x = preprocess(images[i : i + batch_size], meta).to(dev)
        if choice.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            f = model.forward_head(model.forward_features(x), pre_logits=True)
            logits = model.get_classifier()(f)
        f, logits = f.float().cpu(), logits.float().cpu()
        logits_all.append(logits)
        probs.append(torch.softmax(logits, dim=1))
        if features:
            feats.append(f)
    p = torch.cat(probs).numpy() if probs else np.zeros((0, len(meta.classes)), np.float32)
    if features:
        return p, torch.cat(feats).numpy(), torch.cat(logits_all).numpy()
    return p


def feature_model(model_dir: str | Path, device: str = "cpu"):
    """The classifier of MODEL_DIR as OOD scoring and the synthesizer's gates use it (tailsynth.ood.features)."""
    from ..ood.features import FeatureModel

    model, meta = load_classifier(model_dir, device)

    def predict(images: np.ndarray, batch_size: int):
        return predict_arrays(model, meta, images, batch_size=batch_size, features=True)

    return FeatureModel(str(model_dir), list(meta.classes), int(meta.resolution), meta.backbone, predict)
