"""The generation plan: how many candidates per class (the policy) and, for every candidate, which background,
which mask donor or source lesion, which noise seed and which sampling unit.

Determinism and sharding: the whole plan is computed up front from `seed` alone, cheaply, in every process.
Sampling runs in fixed units of `batch_size` consecutive candidates of one class ("class x seed range");
a shard runs a contiguous range of units (`shards.shard_units`). Since a unit's batch is the same in a sharded and an
unsharded run, and every candidate's starting noise comes from its own seed, merged shards are byte-identical
to one run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

POLICIES = ("fill-to-head", "fixed")


@dataclass
class Candidate:
    index: int  # position in the global plan
    id: str
    cls: str
    background: int  # index into the background pool
    mask_donor: int | None  # index into the class pool: borrowed mask (inpaint) or source lesion (harmonize)
    seed: int
    unit: int



# ---- policy ------------------------------------------------------------------------------------------
def class_targets(counts: dict[str, int], classes=None, policy: str = "fill-to-head", count: int | None = None,
                  oversample: float = 1.0, max_synthetic_per_real: float = 10) -> dict[str, int]:
    """Candidates to generate per class.

    fill-to-head: n(c) = min(max(0, N_head - N_c), max_synthetic_per_real * N_c), capped at `count` if given;
    fixed: n(c) = count. Both are multiplied by `oversample` (1/gamma of the later selection step), rounded up.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
    if oversample <= 0:
        raise ConfigError(f"oversample must be > 0, got {oversample}")
    present = {c: n for c, n in counts.items() if n > 0}
    if classes:
        bad = [c for c in classes if c not in present]
        if bad:
            raise ConfigError(f"class(es) {', '.join(bad)} not in the model/training data (have {', '.join(present)})")
    n_head = max(present.values())
    out = {}
    for c, n in present.items():
        if classes and c not in classes:
            continue
        if policy == "fixed":
            if count is None:
                raise ConfigError("policy 'fixed' needs --count")
            base = count
        else:
            base = min(max(0, n_head - n), int(max_synthetic_per_real * n))
            if count is not None:
                base = min(base, count)
        k = math.ceil(base * oversample)
        if k > 0:
            out[c] = k
    return out


def head_classes(counts: dict[str, int], share: float = 0.5) -> list[str]:
    """The largest classes that together hold at least `share` of the images (NV alone on DermaMNIST and on
    ISIC 2019, whose NV is 67% and 51% of the training images)."""
    total = sum(counts.values())
    out, acc = [], 0
    for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if acc >= share * total or n == 0:
            break
        out.append(c)
        acc += n
    return out


def make_plan(targets: dict[str, int], classes: list[str], n_backgrounds: int, class_pool_sizes: dict[str, int],
              seed: int, batch_size: int, mask_mode: str, mode: str = "inpaint") -> list[Candidate]:
    """Every candidate of TARGETS, class by class in CLASSES order, each class drawn from a generator seeded by
    (seed, class index)."""
    plan: list[Candidate] = []
    unit = 0
    for c in [c for c in classes if c in targets]:
        ci = classes.index(c)
        rng = np.random.default_rng([seed, ci])
        n = targets[c]
        bgs = rng.integers(0, n_backgrounds, n)
        needs_donor = mask_mode == "class" or mode == "harmonize"
        donors = rng.integers(0, class_pool_sizes[c], n) if needs_donor else [None] * n
        seeds = rng.integers(0, 2**31 - 1, n)
        for k in range(n):
            plan.append(Candidate(len(plan), f"syn_{c}_s{seed}_{k:05d}", c, int(bgs[k]),
                                  None if donors[k] is None else int(donors[k]), int(seeds[k]), unit + k // batch_size))
        unit += (n + batch_size - 1) // batch_size
    return plan
