"""Compile the pipelines to KFP IR YAML (the committed copies live in pipelines/compiled/)."""

from __future__ import annotations

import tempfile
from pathlib import Path

COMPILED_DIR = Path(__file__).with_name("compiled")


def pipeline_functions() -> dict:
    from .regenerate_tail import regenerate_tail
    from .train_augment import train_augment

    return {"train_augment": train_augment, "regenerate_tail": regenerate_tail}


def compile_all(out: str | Path = COMPILED_DIR) -> list[Path]:
    from kfp import compiler

    from components.images import resolve_images

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="tailsynth-compile-") as tmp:
        for name, fn in pipeline_functions().items():
            raw = Path(tmp) / f"{name}.yaml"
            compiler.Compiler().compile(fn, str(raw))
            path = out / f"{name}.yaml"
            path.write_text(resolve_images(raw.read_text()))
            written.append(path)
    return written
