"""`run.yaml`: one resolved record per run folder (every stage's parameters, data revisions, model hashes,
package versions), so a run can be read and repeated from one file.

Each stage (a CLI command or a pipeline task) calls `record_stage(out_dir, stage, params, **sections)`; stages
that share a folder merge into one file, later calls replacing their own stage's entry only.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

RUN_FILE = "run.yaml"
RUN_FORMAT = "tailsynth-run/1"  # written since the first release; a run.yaml without `format` is read as version 0
PACKAGES = ("tailsynth", "torch", "timm", "diffusers", "numpy", "kfp", "dvc", "onnx", "onnxruntime", "evidently",
            "great-expectations")


def package_versions(names=PACKAGES) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            continue
    return out


def _plain(v):
    """YAML-safe copy: paths and tuples become strings and lists."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def read_run(out_dir) -> dict:
    """OUT_DIR/run.yaml ({} when absent); a file that is not a run record is an error naming it."""
    import yaml

    from .errors import DataError

    p = Path(out_dir) / RUN_FILE
    if not p.is_file():
        return {}
    run = yaml.safe_load(p.read_text()) or {}
    fmt = run.get("format", RUN_FORMAT) if isinstance(run, dict) else "not a mapping"
    if fmt != RUN_FORMAT:
        raise DataError(f"{p}: format {fmt!r}; expected a run record ({RUN_FORMAT}, written by `tailsynth` commands "
                        "and pipeline runs)")
    return run


def record_stage(out_dir, stage: str, params: dict, **sections) -> Path:
    """Write or update OUT_DIR/run.yaml with this stage's resolved parameters and any named sections
    (e.g. data_revision=..., model_hash=..., dvc={...}); returns the file's path."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = read_run(out_dir)
    run.setdefault("format", RUN_FORMAT)
    run["packages"] = package_versions()
    stages = run.setdefault("stages", {})
    stages[stage] = {"params": _plain(params),
                     "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                     **{k: _plain(v) for k, v in sections.items()}}
    p = out_dir / RUN_FILE
    tmp = p.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(run, sort_keys=False))
    tmp.replace(p)
    return p
