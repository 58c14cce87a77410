"""CLI commands of this area (filled in by the area's issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
