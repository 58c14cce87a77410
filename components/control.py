"""Control-flow helpers (no tailsynth call): the list a ParallelFor fans out over."""

# No `from __future__ import annotations`: KFP reads the real annotation objects.
from typing import List

from .base import cpu_component


@cpu_component
def shard_plan(num_shards: int) -> List[int]:
    """Shard indices 0..num_shards-1 for the generation fan-out."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return list(range(num_shards))
