"""Sharding of a generation plan: which sampling units a shard `I/N` runs, and the merge of shard folders into
one folder equal to an unsharded run (see `plan` for why they are equal)."""

from __future__ import annotations

from ..errors import ConfigError
from .candidate_set import merge_candidate_sets


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
    return merge_candidate_sets(dirs, out, shards=True)
