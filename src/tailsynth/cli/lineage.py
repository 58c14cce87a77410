"""`tailsynth lineage`: a thin wrapper over tailsynth.lineage.trace."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail_cleanly, print_json


def lineage(record: str | None = typer.Option(None, "--record", help="one prediction record (a JSON line from "
                                                  "`tailsynth serve --records`), or @FILE for its last line"),
            model_version: str | None = typer.Option(None, "--model-version", help="an exported model version"),
            runs: list[Path] = typer.Option([Path("runs")], "--runs", help="folders holding run folders (repeatable)"),
            as_json: bool = typer.Option(False, "--json", help="print the chain as one JSON object"),
            max_images: int | None = typer.Option(None, "--max-images", help="list at most N images per class")
            ) -> None:
    """Model version -> classifier run -> synthetic set revision -> synthesizer -> real data revision, then every
    synthetic image of each class with its generation provenance."""
    from ..lineage import format_chain, trace

    with fail_cleanly():
        if record is not None and record.startswith("@"):
            lines = [ln for ln in Path(record[1:]).read_text().splitlines() if ln.strip()]
            if not lines:
                raise ValueError(f"{record[1:]}: no prediction records in the file")
            record = lines[-1]
        chain = trace(record=record, model_version=model_version, runs=runs)
    if as_json:
        print_json(chain)
    else:
        print(format_chain(chain, max_images=max_images))


def register(app: typer.Typer) -> None:
    app.command("lineage")(lineage)
