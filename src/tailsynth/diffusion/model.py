"""The inpainting UNet, its named sizes, and the model folder format.

Input channels: noisy image (3) + masked image (3, zero inside the mask) + mask (1) = 7.
Class conditioning: `num_class_embeds = len(classes) + 1`; the last index is the "null" class used
for classifier-free guidance (trained by dropping labels to it).

Model folder (diffusers `save_pretrained` layout plus our metadata):
  DIR/unet/                 EMA weights, the ones used for sampling
  DIR/scheduler/            the training noise schedule (DDPMScheduler config)
  DIR/tailsynth_diffusion.json   classes, resolution, size, prediction type, step, data revision
  DIR/config.json           the resolved training config
  DIR/loss.csv              step,loss,lr,elapsed_s
  DIR/checkpoint/           raw weights, optimizer, EMA and RNG states for resume
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import cards
from ..errors import ConfigError, DataError, MissingInputError

IN_CHANNELS = 7
META_FILE = "tailsynth_diffusion.json"

# Named sizes. `small` is sized for 32 px on 2 CPU cores; `base` for GPUs at 64-256 px.
SIZES: dict[str, dict] = {
    "tiny": dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ),
    # Attention-free, about 1.4 M parameters: trains at the native 28 px of DermaMNIST on 2 CPU cores
    # (28 -> 14 -> 7); attention buys little at <= 32 px and costs a third of the step time.
    "lean": dict(
        block_out_channels=(24, 48, 96),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ),
    # The 64 px candidates for HAM10000 (64 -> 32 -> 16 -> 8, attention-free): `lean` widths with one more level,
    # and a wider one that still ships under the 10 MB fp16 limit. Chosen by measured images/s (diffusion card).
    "lean64": dict(
        block_out_channels=(24, 48, 96, 96),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 4,
        up_block_types=("UpBlock2D",) * 4,
        norm_num_groups=8,
    ),
    "mid64": dict(
        block_out_channels=(32, 64, 128, 192),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 4,
        up_block_types=("UpBlock2D",) * 4,
        norm_num_groups=8,
    ),
    "small": dict(
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=16,
    ),
    "base": dict(
        block_out_channels=(64, 128, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
    ),
}
DEFAULT_RESOLUTION = {"tiny": 16, "lean": 28, "lean64": 64, "mid64": 64, "small": 32, "base": 64}


def build_unet(size: str, resolution: int, num_classes: int):
    from diffusers import UNet2DModel

    if size not in SIZES:
        raise ConfigError(f"unknown model size {size!r} (choose from {', '.join(SIZES)})")
    n_down = len(SIZES[size]["block_out_channels"]) - 1
    if resolution % (2**n_down):
        raise ConfigError(f"resolution {resolution} must be divisible by {2**n_down} for size {size!r}")
    return UNet2DModel(
        sample_size=resolution,
        in_channels=IN_CHANNELS,
        out_channels=3,
        num_class_embeds=num_classes + 1,
        **SIZES[size],
    )


def model_hash(model_dir: str | Path) -> str:
    """Content hash of the sampling weights (first 12 hex digits of sha256)."""
    d = Path(model_dir) / "unet"
    files = sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))
    if not files:
        raise MissingInputError(f"{d}: no model weights (expected diffusion_pytorch_model.safetensors)")
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def read_meta(model_dir: str | Path) -> dict:
    p = Path(model_dir) / META_FILE
    if not p.is_file():
        raise MissingInputError(f"{model_dir}: not a tailsynth diffusion model folder ({META_FILE} missing)")
    return json.loads(p.read_text())


def load_model(model_dir: str | Path, device: str = "cpu"):
    """(unet in eval mode, noise scheduler, meta) from a model folder. Weights shipped in fp16 are computed in
    fp32 (CPU kernels for fp16 convolutions are slow or missing)."""
    from diffusers import DDPMScheduler, UNet2DModel

    meta = read_meta(model_dir)
    verify_weights(model_dir)
    unet = UNet2DModel.from_pretrained(Path(model_dir) / "unet").float().to(device).eval()
    sched = DDPMScheduler.from_pretrained(Path(model_dir) / "scheduler")
    return unet, sched, meta


SHIPPED_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
                 META_FILE)


def read_card(model_dir: str | Path) -> dict:
    """The model card of a shipped synthesizer ({} for a model trained in a run); a card of another schema is a
    DataError naming it."""
    return cards.read_card(model_dir) or {}


# What `generate` falls back to for a model whose card records no sampler (a model trained in a run).
FALLBACK_SAMPLING = {"sampler": "ddim", "steps": 25, "guidance": 1.5}


def recorded_sampling(model_dir: str | Path) -> dict:
    """The sampler, steps and guidance a model's card says it was gated with (so its gates describe what a bare
    `generate --model M` produces); the fallback for a model without a card."""
    card = read_card(model_dir)
    settings = card.get("sampling") or card.get("gate_settings") or {}
    return {k: settings.get(k, v) for k, v in FALLBACK_SAMPLING.items()}


def verify_weights(model_dir: str | Path) -> str | None:
    """A shipped synthesizer's weights must hash to its card's `weights_hash` (a model trained in a run has no
    card and nothing to compare). Returns the hash checked, or None."""
    want = read_card(model_dir).get("weights_hash")
    if not want:
        return None
    got = model_hash(model_dir)
    if got != want:
        raise DataError(f"{Path(model_dir) / 'unet'}: weights hash {got} differs from {want} recorded in "
                        f"{Path(model_dir) / cards.CARD_JSON}: the weights were changed or damaged (restore them from git, "
                        f"or ship the new weights with a new card)")
    return got


def install_pretrained(src: str | Path, dest: str | Path) -> dict:
    """Copy a shipped synthesizer into DEST (a pipeline's model artifact) unchanged; returns its meta with the
    source path and weight hash, so a run records exactly which synthesizer it used."""
    import shutil

    src, dest = Path(src), Path(dest)
    missing = [f for f in SHIPPED_FILES if not (src / f).is_file()]
    if missing:
        raise MissingInputError(f"{src}: not a synthesizer folder (missing {', '.join(missing)})")
    verify_weights(src)
    for f in (*SHIPPED_FILES, cards.CARD_JSON, cards.CARD_MD):
        if (src / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / f, dest / f)
    meta = read_meta(dest)
    meta["pretrained_from"] = str(src)
    (dest / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return {**meta, "model_hash": model_hash(dest)}


def ship_weights(model_dir: str | Path, dest: str | Path, max_mb: float = 8.0) -> dict:
    """Write a trained model's EMA weights as an fp16 safetensors synthesizer into DEST (its card is
    tailsynth.diffusion.card's); refuses weights over `max_mb` (shipped models live in git). Returns
    {weights_hash, weights_mb, parameters}."""
    import shutil

    import torch
    from diffusers import UNet2DModel

    src, dest = Path(model_dir), Path(dest)
    meta = read_meta(src)
    unet = UNet2DModel.from_pretrained(src / "unet").to(torch.float16)
    dest.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(dest / "unet", safe_serialization=True)
    size_mb = (dest / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size / 2**20
    if size_mb > max_mb:
        raise ConfigError(f"{dest}: weights are {size_mb:.1f} MB, over the {max_mb} MB limit for shipped models")
    shutil.copytree(src / "scheduler", dest / "scheduler", dirs_exist_ok=True)
    meta = {**meta, "weights": "ema, fp16"}
    (dest / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return {"weights_hash": model_hash(dest), "weights_mb": round(size_mb, 2),
            "parameters": sum(p.numel() for p in unet.parameters())}
