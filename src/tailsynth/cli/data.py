"""`tailsynth data ...`: fetch, validate, split, stats, push, pull."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail_cleanly, print_json

data_app = typer.Typer(help="Real data: fetch, validate, split, stats, DVC push/pull.", no_args_is_help=True)


@data_app.command("stats")
def stats(source: Path = typer.Argument(..., help="ISIC 2019 folder or MedMNIST .npz"),
          as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Class counts per split."""
    from ..data import load_source

    with fail_cleanly():
        st = load_source(source).stats()
    if as_json:
        print_json(st)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{st['source']} ({st['format']})")
    classes = list(next(iter(st["splits"].values())).keys()) if st["splits"] else []
    t.add_column("split")
    for c in classes:
        t.add_column(c, justify="right")
    t.add_column("total", justify="right")
    for s, counts in st["splits"].items():
        t.add_row(s, *[str(counts[c]) for c in classes], str(sum(counts.values())))
    Console().print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
