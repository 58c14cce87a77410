"""Compile the pipelines to KFP IR YAML (the committed copies live in pipelines/compiled/)."""

from __future__ import annotations

from pathlib import Path

COMPILED_DIR = Path(__file__).with_name("compiled")


def pipeline_functions() -> dict:
    from .regenerate_tail import regenerate_tail
    from .train_augment import train_augment

    return {"train_augment": train_augment, "regenerate_tail": regenerate_tail}


def compile_all(out: str | Path = COMPILED_DIR) -> list[Path]:
    from kfp import compiler

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in pipeline_functions().items():
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(fn, str(path))
        written.append(path)
    return written
