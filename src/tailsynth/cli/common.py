"""Helpers shared by the CLI modules."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

import typer
from rich.console import Console

err = Console(stderr=True)


@contextmanager
def fail_cleanly():
    """Turn the project's own errors (bad input, option, missing file, unreachable service) into one clear line on
    stderr and exit code 1. Anything else is a bug and keeps its traceback."""
    from ..errors import TailsynthError

    try:
        yield
    except TailsynthError as e:
        err.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, sort_keys=False) + "\n")
