"""The floor's tests on constructed features: what passes, what fails and why, and its settings' errors."""

import numpy as np
import pytest

from tailsynth.errors import ConfigError
from tailsynth.ood.clean import Prototypes
from tailsynth.ood.floor import FLOOR_REASONS, Floor, class_thresholds, floor_tests, passes, reason_labels


def _setup():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:2] * 10  # two classes, far apart
    train_y = np.repeat([0, 1], 50)
    train_f = centres[train_y] + rng.normal(0, 1, (100, 4))
    return Prototypes.fit(train_f, train_y, 2), centres, rng


def test_each_test_fails_for_its_own_reason_and_a_typical_sample_passes():
    protos, centres, rng = _setup()
    floor = Floor(quantile=0.9)
    thresholds = {0: 3.0, 1: 3.0}
    feats = np.stack([centres[0] + 0.1, centres[0] + 0.1, -centres[0], centres[0] + 0.1, centres[0] + 0.1])
    ood = np.array([1.0, 5.0, 1.0, 1.0, 1.0])
    probs = np.array([[0.9, 0.1]] * 5)
    probs[3] = [0.05, 0.95]  # confidently the other class
    memorized = np.array([False, False, False, False, True])
    reasons = floor_tests(floor, ood, probs, feats, np.zeros(5, int), memorized, thresholds, protos)
    assert set(reasons) == set(FLOOR_REASONS)
    assert passes(reasons).tolist() == [True, False, False, False, False]
    assert reason_labels(reasons) == ["", "out_of_distribution", "off_prototype", "other_class", "memorized"]


def test_a_class_without_real_held_out_images_has_no_threshold_and_keeps_nothing():
    protos, centres, _ = _setup()
    reasons = floor_tests(Floor(), np.array([0.0]), np.array([[0.0, 1.0]]), centres[1:2], np.array([1]),
                          np.array([False]), {0: 3.0}, protos)
    assert reasons["out_of_distribution"].tolist() == [True]


def test_nan_scores_fail_and_thresholds_are_per_class_quantiles():
    protos, centres, _ = _setup()
    thr = class_thresholds(np.arange(10.0), np.repeat([0, 1], 5), 1.0)
    assert thr == {0: 4.0, 1: 9.0}
    reasons = floor_tests(Floor(), np.array([np.nan]), np.array([[1.0, 0.0]]), centres[:1], np.array([0]),
                          np.array([False]), thr, protos)
    assert reasons["out_of_distribution"].tolist() == [True]


@pytest.mark.parametrize("kw,msg", [({"quantile": 0.0}, "floor quantile"), ({"quantile": 1.5}, "floor quantile"),
                                    ({"score": "nope"}, "floor score"), ({"confidence": 0.0}, "floor confidence"),
                                    ({"band_hi": 0.0}, "band_hi")])
def test_bad_settings_name_the_setting(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        Floor(**kw)
