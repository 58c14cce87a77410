"""Stage images: registry and tag come from configuration, never from the component code.

Order of precedence: environment (TAILSYNTH_IMAGE_REGISTRY, TAILSYNTH_IMAGE_TAG), then
components/images.yaml. The committed compiled YAML is built from images.yaml alone (the recompile test
clears the environment), so a changed registry shows up as a diff in review.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

CONFIG_FILE = Path(__file__).with_name("images.yaml")


def image_config() -> dict:
    with open(CONFIG_FILE) as f:
        cfg = yaml.safe_load(f) or {}
    for key in ("registry", "tag", "cpu_name", "cuda_name"):
        if key not in cfg:
            raise KeyError(f"{CONFIG_FILE}: missing key {key!r}")
    cfg["registry"] = os.environ.get("TAILSYNTH_IMAGE_REGISTRY", cfg["registry"]).rstrip("/")
    cfg["tag"] = os.environ.get("TAILSYNTH_IMAGE_TAG", cfg["tag"])
    return cfg


def image(kind: str) -> str:
    """Full image reference for 'cpu' or 'cuda' stages."""
    cfg = image_config()
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"image kind must be 'cpu' or 'cuda', got {kind!r}")
    return f"{cfg['registry']}/{cfg[kind + '_name']}:{cfg['tag']}"


CPU_IMAGE = image("cpu")
CUDA_IMAGE = image("cuda")
