"""Stage images: registry and tag come from configuration, never from the component code.

Components are declared with a placeholder image per kind (nothing is read at import); `pipelines.compile`
puts the real references into the compiled YAML. Order of precedence: environment
(TAILSYNTH_IMAGE_REGISTRY, TAILSYNTH_IMAGE_TAG), then components/images.yaml. The committed compiled YAML
is built from images.yaml alone (the recompile test clears the environment), so a changed registry shows
up as a diff in review.
"""

from __future__ import annotations

import os
from pathlib import Path

from tailsynth.errors import ConfigError

CONFIG_FILE = Path(__file__).with_name("images.yaml")
KINDS = ("cpu", "cuda")
PLACEHOLDERS = {kind: f"tailsynth-stage-image:{kind}" for kind in KINDS}


def image_config() -> dict:
    import yaml

    with open(CONFIG_FILE) as f:
        cfg = yaml.safe_load(f) or {}
    for key in ("registry", "tag", "cpu_name", "cuda_name"):
        if key not in cfg:
            raise ConfigError(f"{CONFIG_FILE}: missing key {key!r}")
    cfg["registry"] = os.environ.get("TAILSYNTH_IMAGE_REGISTRY", cfg["registry"]).rstrip("/")
    cfg["tag"] = os.environ.get("TAILSYNTH_IMAGE_TAG", cfg["tag"])
    return cfg


def image(kind: str, cfg: dict | None = None) -> str:
    """Full image reference for 'cpu' or 'cuda' stages."""
    if kind not in KINDS:
        raise ConfigError(f"image kind must be 'cpu' or 'cuda', got {kind!r}")
    cfg = cfg or image_config()
    return f"{cfg['registry']}/{cfg[kind + '_name']}:{cfg['tag']}"


def resolve_images(compiled_yaml: str) -> str:
    """COMPILED_YAML with each placeholder image replaced by the configured reference."""
    cfg = image_config()
    for kind, placeholder in PLACEHOLDERS.items():
        compiled_yaml = compiled_yaml.replace(f"image: {placeholder}\n", f"image: {image(kind, cfg)}\n")
    return compiled_yaml
