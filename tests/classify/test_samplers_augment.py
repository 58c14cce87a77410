import numpy as np
import pytest
import torch

from tailsynth.classify.augment import AugmentConfig, augment_batch
from tailsynth.classify.samplers import EpochPlan, draw, expected_class_counts

LABELS = np.array([0] * 90 + [1] * 9 + [2] * 1)


def test_expected_counts_per_sampler():
    assert expected_class_counts(LABELS, 3, "none", 100).tolist() == pytest.approx([90, 9, 1])
    assert expected_class_counts(LABELS, 3, "class-balanced", 99).tolist() == pytest.approx([33, 33, 33])
    s = np.sqrt([90, 9, 1])
    assert expected_class_counts(LABELS, 3, "sqrt", 100).tolist() == pytest.approx((100 * s / s.sum()).tolist())


def test_class_balanced_draws_balance_the_classes():
    idx = draw(LABELS, 3, "class-balanced", 30000, torch.Generator().manual_seed(0))
    share = np.bincount(LABELS[idx.numpy()], minlength=3) / 30000
    assert np.allclose(share, 1 / 3, atol=0.02)
    perm = draw(LABELS, 3, "none", 100, torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(100))


def _epoch_counts(plan, n_real, C=3, seed=0):
    idx = plan.indices(torch.Generator().manual_seed(seed)).numpy()
    labels = np.concatenate([plan.real, plan.syn])
    real, syn = idx[idx < n_real], idx[idx >= n_real]
    return np.bincount(labels[real], minlength=C), np.bincount(labels[syn], minlength=C), idx


def test_epoch_plan_ratio_is_the_synthetic_share_of_each_class():
    syn = np.array([2] * 30)
    plan = EpochPlan(LABELS, syn, 3, "none", synthetic_ratio=0.25)
    real_c, syn_c, idx = _epoch_counts(plan, 100)
    # Class totals come from the pooled counts (90, 9, 1 + 30); a quarter of VASC's 31 draws are synthetic.
    assert len(idx) == len(plan) == 130
    assert real_c.tolist() == [90, 9, 23] and syn_c.tolist() == [0, 0, 8]
    assert plan.class_counts().tolist() == [90, 9, 31]
    # Default: the pooled share, i.e. every image once under `none`.
    pooled = EpochPlan(LABELS, syn, 3, "none")
    real_c, syn_c, idx = _epoch_counts(pooled, 100)
    assert sorted(idx.tolist()) == list(range(130)) and syn_c.tolist() == [0, 0, 30]


def test_prior_shift_control_has_the_synthetic_arms_counts_all_real():
    """Ratio 0 with the synthetic arm's set: the same per-class draws, every one a real image, spread evenly."""
    syn = np.array([1] * 40 + [2] * 59)
    for mode in ("none", "class-balanced", "sqrt"):
        arm = EpochPlan(LABELS, syn, 3, mode)
        control = EpochPlan(LABELS, syn, 3, mode, synthetic_ratio=0.0)
        a_real, a_syn, _ = _epoch_counts(arm, 100)
        c_real, c_syn, idx = _epoch_counts(control, 100, seed=3)
        assert (a_real + a_syn).tolist() == c_real.tolist(), mode
        assert c_syn.sum() == 0 and control.class_counts().tolist() == arm.class_counts().tolist()
        # The one real VASC image fills all of VASC's draws; DF's 9 images are repeated within one of each other.
        reps = np.bincount(idx, minlength=100)
        df = reps[90:99]
        assert reps[99] == c_real[2] and df.max() - df.min() <= 1, mode
    cb = EpochPlan(LABELS, syn, 3, "class-balanced", synthetic_ratio=0.0)
    assert cb.class_counts().tolist() == [67, 66, 66]  # 199 draws in equal shares (largest remainder)


def test_epoch_plan_rejects_a_ratio_outside_0_1():
    with pytest.raises(ValueError, match="share of a class's draws"):
        EpochPlan(LABELS, np.array([2]), 3, "none", synthetic_ratio=1.5)


def test_augment_keeps_shape_range_and_is_reproducible():
    x = torch.rand(8, 3, 28, 28)
    cfg = AugmentConfig()
    a = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(1))
    b = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(1))
    c = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a, x)
    assert torch.equal(augment_batch(x.clone(), AugmentConfig(enabled=False), torch.Generator()), x)


def test_identity_geometry_without_jitter_keeps_pixels():
    cfg = AugmentConfig(flip=False, rot90=False, rotate_deg=0, crop_scale=(1, 1), crop_ratio=(1, 1), brightness=0,
                        contrast=0, saturation=0, hue=0)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(augment_batch(x.clone(), cfg, torch.Generator().manual_seed(0)), x, atol=1e-5)
    with pytest.raises(ValueError, match="unknown option"):
        AugmentConfig.from_dict({"flipz": True})


def test_additive_dose_keeps_the_real_only_epoch_and_adds_synthetic_draws():
    syn = np.array([1] * 40 + [2] * 59)
    for mode in ("none", "class-balanced", "sqrt"):
        real_only = expected_class_counts(LABELS, 3, mode, 100)
        add = EpochPlan(LABELS, syn, 3, mode, synthetic_ratio=0.25, dose="add")
        a_real, a_syn, idx = _epoch_counts(add, 100)
        # the real draws are exactly a real-only epoch's (class totals of the sampler over the real images)
        assert a_real.sum() == 100 and np.abs(a_real - real_only).max() <= 1, mode
        # each class with synthetic images gets r/(1-r) of its real draws on top: r is its synthetic share
        assert a_syn[0] == 0
        for c in (1, 2):
            assert a_syn[c] == round(a_real[c] * 0.25 / 0.75), mode
        replay = EpochPlan(LABELS, syn, 3, mode, synthetic_ratio=0.25, dose="replay")
        r_real, r_syn, _ = _epoch_counts(replay, 100, seed=2)
        assert r_syn.sum() == 0 and r_real.tolist() == (a_real + a_syn).tolist(), mode
        assert replay.class_counts().tolist() == add.class_counts().tolist()
    with pytest.raises(ValueError, match="needs a synthetic_ratio"):
        EpochPlan(LABELS, syn, 3, "none", dose="add")
    with pytest.raises(ValueError, match="unknown synthetic dose"):
        EpochPlan(LABELS, syn, 3, "none", synthetic_ratio=0.2, dose="double")
