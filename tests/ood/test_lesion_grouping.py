"""Lesion-level exclusion: candidates and memorization checks treat all images of one lesion as one."""

from __future__ import annotations

import numpy as np

from tailsynth.data import load_source
from tailsynth.ood.memorize import descriptor_nn, nn_distance
from tailsynth.ood.select import background_lesion_rows


def _multi_image_lesion(ds):
    by = {}
    for r in ds.records:
        by.setdefault(r.group_id, []).append(r)
    return next(v for v in by.values() if len(v) >= 2)


def test_memorization_ignores_every_image_of_the_background_lesion(tiny_ham):
    ds = load_source(tiny_ham)
    lesion = _multi_image_lesion(ds)
    rows = background_lesion_rows(ds.records, [lesion[0].image_id, "not-a-training-image"])
    own = sorted(i for i, r in enumerate(ds.records) if r.group_id == lesion[0].group_id)
    assert sorted(x for x in rows[0] if x >= 0) == own and len(own) >= 2
    assert (rows[1] == -1).all()
    # a query equal to the lesion's images matches none of them once they are excluded
    ref = np.random.default_rng(0).random((len(ds.records), 12 * 12)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    q = ref[own[:1]]
    d, j = nn_distance(q, ref, rows[:1])
    assert j[0] not in own and d[0] > 0
    d0, j0 = nn_distance(q, ref)
    assert j0[0] == own[0] and d0[0] == 0
    _, jd = descriptor_nn(q, ref, rows[:1])
    assert jd[0] not in own
