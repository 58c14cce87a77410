"""The `tailsynth` command line: each area registers its commands from its own module."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="tailsynth: long-tail skin lesion classification with diffusion-synthesised tail data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

# Each module defines register(app); a module whose optional dependencies are missing still registers
# its commands, and they fail only when run.
AREAS = ("data", "classify", "diffusion", "select", "serve", "monitor", "pipeline", "lineage")

for _name in AREAS:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:  # pragma: no cover - console entry
    app()
