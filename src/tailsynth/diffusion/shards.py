"""Sharding of a generation plan: which sampling units a shard `I/N` runs, and the merge of shard folders into
one folder equal to an unsharded run (see `plan` for why they are equal)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from ..data.errors import DataError
from ..errors import ConfigError
from .outputs import write_grids, write_tables


def parse_shard(shard) -> tuple[int, int] | None:
    """'I/N' with 1 <= I <= N -> (I, N)."""
    if shard is None or shard == "":
        return None
    if isinstance(shard, tuple):
        i, n = shard
    else:
        try:
            i, n = (int(v) for v in str(shard).split("/"))
        except ValueError:
            raise ConfigError(f"--shard must look like I/N (e.g. 1/4), got {shard!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise ConfigError(f"--shard {i}/{n}: need 1 <= I <= N")
    return i, n


def shard_units(n_units: int, shard: tuple[int, int] | None) -> range:
    """The contiguous range of unit indices shard (I, N) runs; all of them without a shard."""
    if shard is None:
        return range(n_units)
    i, n = shard
    return range((i - 1) * n_units // n, i * n_units // n)


def merge_shards(dirs, out) -> dict:
    """Merge shard folders of one plan into OUT; the result equals one unsharded run with the same settings."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ConfigError("merge-shards: no shard folders given")
    configs, manifests = [], []
    for d in dirs:
        gj = d / "generation.json"
        if not gj.is_file():
            raise DataError(f"{d}: not a generation output (generation.json missing)")
        configs.append(json.loads(gj.read_text()))
        with open(d / "manifest.csv", newline="") as f:
            rd = csv.DictReader(f)
            manifests.append((rd.fieldnames, list(rd)))
    base = {k: v for k, v in configs[0].items() if k != "shard"}
    for d, c in zip(dirs, configs):
        diff = sorted(k for k in set(base) | set(c) if k != "shard" and base.get(k) != c.get(k))
        if diff:
            raise DataError(f"{d}: generation settings differ from {dirs[0]} in {', '.join(diff)}")
    shards = [c.get("shard") for c in configs]
    ns = {int(s.split("/")[1]) for s in shards if s}
    if None in shards or len(ns) != 1 or sorted(int(s.split("/")[0]) for s in shards) != list(range(1, ns.pop() + 1)):
        raise DataError(f"merge-shards: need exactly shards 1..N of one plan, got {shards}")
    columns = manifests[0][0]
    rows = sorted((r for _, rs in manifests for r in rs), key=lambda r: int(r["index"]))
    idx = [int(r["index"]) for r in rows]
    if len(set(idx)) != len(idx):
        raise DataError("merge-shards: shards overlap (duplicate candidate index)")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    has_inputs = "background_path" in columns
    if has_inputs:
        (out / "inputs").mkdir(exist_ok=True)
    src_of = {}
    for d, (_, rs) in zip(dirs, manifests):
        for r in rs:
            src_of[r["id"]] = d
    for r in rows:
        d = src_of[r["id"]]
        shutil.copyfile(d / "images" / f"{r['id']}.png", out / "images" / f"{r['id']}.png")
        if has_inputs:
            for k in ("background_path", "mask_path"):
                shutil.copyfile(d / r[k], out / r[k])
    write_tables(out, rows, columns)
    merged = dict(configs[0])
    merged["shard"] = None
    (out / "generation.json").write_text(json.dumps(merged, indent=2) + "\n")
    grids = write_grids(out, rows)
    return {"out": str(out), "n": len(rows), "shards": len(dirs), "grids": grids}
