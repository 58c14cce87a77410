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


def test_epoch_plan_mixes_synthetic_at_the_ratio():
    plan = EpochPlan(LABELS, np.array([2] * 30), 3, "none", synthetic_ratio=0.2)
    idx = plan.indices(torch.Generator().manual_seed(0))
    assert len(idx) == len(plan) == 120
    assert int((idx >= 100).sum()) == 20
    assert plan.class_counts().tolist() == pytest.approx([90, 9, 21])
    union = EpochPlan(LABELS, np.array([2] * 30), 3, "none")
    assert len(union) == 130 and union.class_counts().tolist() == pytest.approx([90, 9, 31])


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
