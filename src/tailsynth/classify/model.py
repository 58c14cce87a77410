"""The classifier model folder: one format shared by training, evaluation, OOD scoring, export and monitoring.

MODEL_DIR/model.pt is a dict:
  backbone (timm name), classes (ISIC names, index order), resolution (px), mean/std (per channel, 0..1 scale),
  state_dict, config (the resolved training config), data_revision (str or None).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..hashing import model_version  # noqa: F401  (torch-free, shared by serving and monitoring)

MODEL_FILE = "model.pt"
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


def build_backbone(backbone: str, num_classes: int, pretrained_path: str | None = None, **kwargs) -> torch.nn.Module:
    import timm

    # Never reach a hub: weights are trained here or loaded from a local file.
    model = timm.create_model(backbone, pretrained=False, num_classes=num_classes, **kwargs)
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
                    data_revision: str | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {
            "backbone": backbone,
            "classes": list(classes),
            "resolution": int(resolution),
            "mean": list(mean),
            "std": list(std),
            "state_dict": state,
            "config": config or {},
            "data_revision": data_revision,
        },
        out / MODEL_FILE,
    )
    return out / MODEL_FILE


def load_classifier(model_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, meta without the state dict)."""
    path = Path(model_dir)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no classifier checkpoint (expected {MODEL_FILE} from `tailsynth train classifier`)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_backbone(ckpt["backbone"], len(ckpt["classes"]))
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta


def preprocess(images: np.ndarray, meta: dict) -> torch.Tensor:
    """N x H x W x 3 uint8 at meta['resolution'] -> normalised float N x 3 x H x W."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict_arrays(model: torch.nn.Module, meta: dict, images: np.ndarray, batch_size: int = 256,
                   features: bool = False):
    """Softmax probabilities (and penultimate features when asked) for uint8 images at the model's resolution."""
    probs, feats, logits_all = [], [], []
    for i in range(0, len(images), batch_size):
        x = preprocess(images[i : i + batch_size], meta)
        f = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model.get_classifier()(f)
        logits_all.append(logits)
        probs.append(torch.softmax(logits, dim=1))
        if features:
            feats.append(f)
    p = torch.cat(probs).numpy() if probs else np.zeros((0, len(meta["classes"])), np.float32)
    if features:
        return p, torch.cat(feats).numpy(), torch.cat(logits_all).numpy()
    return p
