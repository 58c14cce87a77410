"""The `tailsynth train ...` group, shared by areas that train something (classifier, diffusion).

Each area decorates its command onto `train_app` and calls `attach(app)` from its register(app);
`attach` adds the group to the root app only once.
"""

from __future__ import annotations

import typer

train_app = typer.Typer(help="Train models: classifier, diffusion.", no_args_is_help=True)


def attach(app: typer.Typer) -> typer.Typer:
    if not any(g.typer_instance is train_app for g in app.registered_groups):
        app.add_typer(train_app, name="train")
    return train_app
