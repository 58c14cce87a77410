"""Feature-space synthesis parts: flip views, per-class shrunk Gaussians, the synthetic share, class-balanced weights
and the L-BFGS head re-fit."""

import numpy as np
import pytest

from tailsynth.classify.feature_synthesis import (
    ClassGaussians,
    balanced_weights,
    fit_head,
    flip_views,
    head_logits,
    synthetic_counts,
)
from tailsynth.errors import ConfigError


def test_flip_views_are_the_four_orientations_view_major():
    x = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    v = flip_views(x)
    assert v.shape == (8, 3, 4, 3)
    assert (v[:2] == x).all() and (v[2:4] == x[:, :, ::-1]).all() and (v[4:6] == x[:, ::-1]).all()
    assert (v[6:] == x[:, ::-1, ::-1]).all()


def test_gaussians_fit_the_class_and_sample_reproducibly():
    rng = np.random.default_rng(0)
    f = np.concatenate([rng.normal(5.0, 1.0, (200, 8)), rng.normal(-3.0, 0.5, (40, 8))])
    y = np.array([0] * 200 + [1] * 40)
    g = ClassGaussians.fit(f, y, [1])
    assert list(g.means) == [1] and np.allclose(g.means[1], -3.0, atol=0.3)
    assert 0.0 <= g.shrinkage[1] <= 1.0
    a, la = g.sample({1: 500}, seed=3)
    b, _ = g.sample({1: 500}, seed=3)
    c, _ = g.sample({1: 500}, seed=4)
    assert a.shape == (500, 8) and (la == 1).all() and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.allclose(a.mean(0), -3.0, atol=0.2) and np.allclose(a.std(0), 0.5, atol=0.15)
    with pytest.raises(ConfigError, match="class index 2"):
        ClassGaussians.fit(f, np.array([0] * 239 + [2]), [2])


def test_synthetic_share_and_balanced_weights():
    y = np.array([0] * 90 + [1] * 10 + [2] * 3)
    assert synthetic_counts(y, [1, 2], 0.25) == {1: 4, 2: 1}  # ceil(10/3), ceil(3/3)
    assert synthetic_counts(y, [1, 2], 0.5) == {1: 10, 2: 3}
    assert synthetic_counts(y, [1], 0.0) == {1: 0}
    with pytest.raises(ConfigError, match="r=1"):
        synthetic_counts(y, [1], 1.0)
    w = balanced_weights(y, 4)  # class 3 absent: no weight, no division by zero
    totals = [w[y == c].sum() for c in range(3)]
    assert np.allclose(totals, totals[0]) and w.mean() == pytest.approx(1.0)


def test_head_refit_on_balanced_weights_recovers_the_rare_class():
    rng = np.random.default_rng(1)
    f = np.concatenate([rng.normal(0.0, 1.0, (500, 4)), rng.normal(1.5, 1.0, (25, 4))]).astype(np.float32)
    y = np.array([0] * 500 + [1] * 25)
    w0 = np.zeros((2, 4), np.float32)
    b0 = np.array([3.0, -3.0], np.float32)  # a head that always says "class 0"
    assert (head_logits(f, w0, b0).argmax(1) == 0).all()
    w, b = fit_head(f, y, balanced_weights(y, 2), w0, b0, l2=1e-3)
    pred = head_logits(f, w, b).argmax(1)
    recall = [(pred[y == c] == c).mean() for c in (0, 1)]
    assert min(recall) > 0.7, recall
    w2, b2 = fit_head(f, y, balanced_weights(y, 2), w0, b0, l2=1e-3)
    assert np.array_equal(w, w2) and np.array_equal(b, b2)  # deterministic
    # A strong penalty keeps the weights small: l2 does act.
    ws, _ = fit_head(f, y, balanced_weights(y, 2), w0, b0, l2=10.0)
    assert np.abs(ws).sum() < np.abs(w).sum()
