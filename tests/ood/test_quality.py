"""FD, KID and k-NN precision/recall against values worked out by hand on tiny arrays."""

import numpy as np
import pytest

from tailsynth.ood.quality import frechet_distance, frechet_from_stats, kid, mmd2_unbiased, precision_recall


def test_frechet_distance_matches_hand_value():
    real = np.array([[0, 0], [2, 0], [0, 2], [2, 2]], float)  # mean (1,1), cov 4/3 I
    fake = np.array([[1, 1], [5, 1], [1, 5], [5, 5]], float)  # mean (3,3), cov 16/3 I
    # ||dmu||^2 = 8; per axis (sqrt(4/3) - sqrt(16/3))^2 = 4/3; two axes.
    assert frechet_distance(real, fake) == pytest.approx(8 + 8 / 3, rel=1e-10)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-10)


def test_frechet_handles_singular_and_non_commuting_covariances():
    # Rank-1 covariances that do not commute: Tr sqrt(S1 S2) must still come out real and exact.
    s1 = np.array([[1.0, 0.0], [0.0, 0.0]])
    s2 = np.array([[0.5, 0.5], [0.5, 0.5]])
    # sqrt(S1) S2 sqrt(S1) = [[0.5, 0], [0, 0]] -> Tr sqrt = sqrt(0.5); FD = 1 + 1 - 2 sqrt(0.5).
    assert frechet_from_stats(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(2 - 2 * np.sqrt(0.5), rel=1e-10)


def test_kid_matches_hand_value():
    a, b = np.array([[1.0], [2.0]]), np.array([[0.0], [3.0]])
    # k(x,y) = (xy + 1)^3 in 1-d: kxx off-diag 27, kyy off-diag 1, kxy mean (1 + 64 + 1 + 343) / 4.
    expected = 27 + 1 - 2 * (409 / 4)
    assert mmd2_unbiased(a, b) == pytest.approx(expected)
    mean, std = kid(a, b)
    assert mean == pytest.approx(expected) and std == 0.0


def test_kid_near_zero_for_same_distribution_and_large_for_shift():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    same, _ = kid(x, y, subset_size=100, n_subsets=20)
    shifted, _ = kid(x, y + 3.0, subset_size=100, n_subsets=20)
    assert abs(same) < 0.05 < shifted


def test_precision_recall_matches_hand_value():
    real = np.array([[0.0], [1.0], [2.0]])  # k=1 radii: 1, 1, 1
    fake = np.array([[0.5], [10.0], [11.0]])  # k=1 radii: 9.5, 1, 1
    p, r = precision_recall(real, fake, k=1)
    assert p == pytest.approx(1 / 3)  # only 0.5 lies in a real ball
    assert r == pytest.approx(1.0)  # every real point lies in the ball of 0.5 (radius 9.5)


def test_too_few_samples_give_nan_not_a_number_that_looks_valid():
    assert np.isnan(frechet_distance(np.zeros((1, 3)), np.zeros((5, 3))))
    assert all(np.isnan(v) for v in precision_recall(np.zeros((1, 2)), np.ones((4, 2))))
