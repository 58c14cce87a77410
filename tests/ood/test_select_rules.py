"""Scores and selection rules on constructed features: in-distribution candidates kept, shifted ones dropped."""

import numpy as np
import pytest

from tailsynth.ood.memorize import check_memorization, pixel_vectors, thresholds_from_real
from tailsynth.ood.scores import RealReference, energy, knn_score, mahalanobis, score_all
from tailsynth.ood.select import calibrate_thresholds, keep_calibrated, keep_fraction, typicality


@pytest.fixture
def constructed():
    rng = np.random.default_rng(0)
    d = 8
    # Non-negative, direction-coded means, like post-ReLU penultimate features (the k-NN score normalises).
    means = np.stack([np.r_[np.full(4, 6.0), np.full(4, 1.0)], np.r_[np.full(4, 1.0), np.full(4, 6.0)]])
    cov = np.diag(np.linspace(0.5, 2.0, d))
    real = np.concatenate([rng.multivariate_normal(means[c], cov, 200) for c in (0, 1)])
    real_y = np.repeat([0, 1], 200)
    val = np.concatenate([rng.multivariate_normal(means[c], cov, 60) for c in (0, 1)])
    val_y = np.repeat([0, 1], 60)
    # Per class: 20 in-distribution candidates, then 20 shifted ones (wrong class region or off-manifold).
    cand, cand_y, is_in = [], [], []
    for c in (0, 1):
        cand.append(rng.multivariate_normal(means[c], cov, 20))
        cand.append(rng.multivariate_normal(means[1 - c], cov, 10))  # looks like the other class
        cand.append(rng.multivariate_normal(means[c] + np.r_[-8.0, 8.0, -8.0, 8.0, np.zeros(d - 4)], cov, 10))  # off-manifold
        cand_y += [c] * 40
        is_in += [True] * 20 + [False] * 20
    return RealReference.fit(real, real_y, 2), val, val_y, np.concatenate(cand), np.array(cand_y), np.array(is_in)


def test_mahalanobis_keep_fraction_keeps_exactly_the_in_distribution_candidates(constructed):
    ref, _, _, cand, y, is_in = constructed
    score = mahalanobis(cand, y, ref.gaussians)
    kept = keep_fraction(score, y, gamma=0.5)
    np.testing.assert_array_equal(kept, is_in)


def test_knn_score_separates_the_same_way(constructed):
    ref, _, _, cand, y, is_in = constructed
    kept = keep_fraction(knn_score(cand, y, ref.features, ref.labels, k=5), y, gamma=0.5)
    assert (kept == is_in).mean() >= 0.95


def test_calibrated_threshold_keeps_in_distribution_and_rejects_shifted(constructed):
    ref, val, val_y, cand, y, is_in = constructed
    thr = calibrate_thresholds(mahalanobis(val, val_y, ref.gaussians), val_y, 0.95)
    kept = keep_calibrated(mahalanobis(cand, y, ref.gaussians), y, thr)
    assert not kept[~is_in].any()
    assert kept[is_in].mean() >= 0.8  # ~95% expected; 20 samples per class


def test_memorized_candidates_are_never_kept_and_quota_is_per_class():
    ood = np.array([0.1, 0.2, 0.3, 0.4, 5.0, 6.0, 7.0, 8.0])
    cls = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    eligible = np.array([False, True, True, True, True, True, True, True])
    kept = keep_fraction(ood, cls, 0.5, eligible)
    np.testing.assert_array_equal(kept, [False, True, True, False, True, True, False, False])
    with pytest.raises(ValueError, match="gamma"):
        keep_fraction(ood, cls, 0.0)


def test_calibration_without_validation_images_of_a_class_names_it():
    with pytest.raises(ValueError, match="class"):
        keep_calibrated(np.zeros(2), np.array([0, 3]), {0: 1.0})


def test_energy_formula_and_orientation():
    np.testing.assert_allclose(energy(np.array([[0.0, 0.0]])), [-np.log(2)])
    confident, flat = energy(np.array([[10.0, 0.0, 0.0], [0.1, 0.0, 0.0]]))
    assert confident < flat  # confident in-distribution inputs have lower energy


def test_score_all_p_intended_and_typicality():
    rng = np.random.default_rng(1)
    ref = RealReference.fit(rng.normal(size=(50, 3)), np.repeat([0, 1], 25), 2, knn_k=3)
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    s = score_all(rng.normal(size=(2, 3)), np.log(probs), probs, np.array([1, 1]), ref)
    np.testing.assert_allclose(s["p_intended"], [0.1, 0.8])
    t = typicality(np.array([0.0, 10.0]), np.array([0, 0]), np.array([1.0, 2.0, 3.0, 4.0]), np.zeros(4, int))
    np.testing.assert_allclose(t, [1.0, 0.0])


def test_exact_copy_of_a_training_image_is_flagged_memorized():
    rng = np.random.default_rng(2)
    train_img = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    val_img = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    train_f, val_f = rng.normal(size=(30, 16)), rng.normal(size=(10, 16))
    cand_img = np.stack([train_img[7], rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)])
    cand_f = np.stack([train_f[7], rng.normal(size=16)])
    ft, pt = thresholds_from_real(val_f, pixel_vectors(val_img), train_f, pixel_vectors(train_img), 0.01)
    res = check_memorization(cand_f, pixel_vectors(cand_img), train_f, pixel_vectors(train_img), ft, pt)
    np.testing.assert_array_equal(res.memorized, [True, False])
    np.testing.assert_array_equal(res.exact_copy, [True, False])
    assert res.pixel_nn_index[0] == 7
    # The candidate's own inpainting background is not a memorization match.
    res2 = check_memorization(cand_f, pixel_vectors(cand_img), train_f, pixel_vectors(train_img), ft, pt,
                              exclude=np.array([7, -1]))
    assert not res2.memorized[0]


def test_exact_copy_still_flagged_after_pixels_are_shrunk_for_large_images():
    from tailsynth.ood.select import shrink

    rng = np.random.default_rng(3)
    train_img = rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
    small = shrink(np.concatenate([train_img, train_img[4:5]]), 32)
    assert small.shape == (13, 32, 32, 3)
    px = pixel_vectors(small)
    res = check_memorization(np.eye(13)[12:], px[12:], np.eye(13)[:12], px[:12], 0.0, 0.0)
    assert res.exact_copy[0] and res.memorized[0] and res.pixel_nn_index[0] == 4
