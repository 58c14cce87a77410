"""Each long-tail loss against values computed by hand (math on floats, not torch) on tiny tensors."""

import math

import numpy as np
import pytest
import torch

from tailsynth.classify.losses import (
    LOSSES,
    build_loss,
    effective_number_weights,
    inverse_frequency_weights,
    posthoc_adjust,
)

LOGITS = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
TARGET = [0, 2]
COUNTS = [10.0, 5.0, 1.0]


def _t():
    return torch.tensor(LOGITS), torch.tensor(TARGET)


def nll(row, k, offset=(0.0, 0.0, 0.0)):
    z = [a + b for a, b in zip(row, offset)]
    return -(z[k] - math.log(sum(math.exp(v) for v in z)))


def test_ce_matches_hand_value():
    expected = (nll(LOGITS[0], 0) + nll(LOGITS[1], 2)) / 2
    assert float(build_loss("ce", COUNTS)(*_t())) == pytest.approx(expected, rel=1e-6)
    # 2.0 -> p = e^2 / (e^2 + 1 + e^-1)
    assert nll(LOGITS[0], 0) == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))))


def test_weighted_ce_inverse_frequency():
    w = [1 / 10, 1 / 5, 1 / 1]
    w = [x * 3 / sum(w) for x in w]  # [0.2308, 0.4615, 2.3077]
    assert inverse_frequency_weights(COUNTS).tolist() == pytest.approx(w, rel=1e-6)
    expected = (w[0] * nll(LOGITS[0], 0) + w[2] * nll(LOGITS[1], 2)) / (w[0] + w[2])
    assert float(build_loss("weighted-ce", COUNTS)(*_t())) == pytest.approx(expected, rel=1e-6)


def test_cb_ce_effective_number():
    beta = 0.9
    eff = [(1 - beta ** n) / (1 - beta) for n in COUNTS]  # 6.5132, 4.0951, 1.0
    w = [1 / e for e in eff]
    w = [x * 3 / sum(w) for x in w]
    assert effective_number_weights(COUNTS, beta).tolist() == pytest.approx(w, rel=1e-6)
    expected = (w[0] * nll(LOGITS[0], 0) + w[2] * nll(LOGITS[1], 2)) / (w[0] + w[2])
    assert float(build_loss("cb-ce", COUNTS, cb_beta=beta)(*_t())) == pytest.approx(expected, rel=1e-6)


def test_focal_gamma2():
    def fl(row, k):
        p = math.exp(-nll(row, k))
        return -((1 - p) ** 2) * math.log(p)

    expected = (fl(LOGITS[0], 0) + fl(LOGITS[1], 2)) / 2
    assert float(build_loss("focal", COUNTS, focal_gamma=2.0)(*_t())) == pytest.approx(expected, rel=1e-6)
    # gamma = 0 is plain CE
    assert float(build_loss("focal", COUNTS, focal_gamma=0.0)(*_t())) == pytest.approx(
        float(build_loss("ce", COUNTS)(*_t())), rel=1e-6)


def test_ldam_margins_and_drw():
    raw = [n ** -0.25 for n in COUNTS]
    m = [0.5 * r / max(raw) for r in raw]  # 0.2812, 0.3344, 0.5
    assert m[2] == pytest.approx(0.5)
    loss = build_loss("ldam-drw", COUNTS, drw_epoch=3)
    assert loss.margins.tolist() == pytest.approx(m, rel=1e-6)
    r0 = [LOGITS[0][0] - m[0], LOGITS[0][1], LOGITS[0][2]]
    r1 = [LOGITS[1][0], LOGITS[1][1], LOGITS[1][2] - m[2]]
    loss.set_epoch(0)
    expected = (nll(r0, 0) + nll(r1, 2)) / 2
    assert float(loss(*_t())) == pytest.approx(expected, rel=1e-6)
    # From the DRW epoch on, effective-number weights (beta 0.9999) apply.
    loss.set_epoch(3)
    w = effective_number_weights(COUNTS, 0.9999).tolist()
    expected = (w[0] * nll(r0, 0) + w[2] * nll(r1, 2)) / (w[0] + w[2])
    assert float(loss(*_t())) == pytest.approx(expected, rel=1e-6)


def test_ldam_default_drw_epoch_is_80_percent():
    assert build_loss("ldam-drw", COUNTS, epochs=10).drw_epoch == 8


def test_logit_adjusted_and_balanced_softmax():
    prior = [n / sum(COUNTS) for n in COUNTS]
    off = [math.log(p) for p in prior]
    expected = (nll(LOGITS[0], 0, off) + nll(LOGITS[1], 2, off)) / 2
    assert float(build_loss("logit-adjusted", COUNTS)(*_t())) == pytest.approx(expected, rel=1e-6)
    half = [0.5 * o for o in off]
    expected_half = (nll(LOGITS[0], 0, half) + nll(LOGITS[1], 2, half)) / 2
    assert float(build_loss("logit-adjusted", COUNTS, la_tau=0.5)(*_t())) == pytest.approx(expected_half, rel=1e-6)
    # log n_c and log pi_c differ by a constant: balanced softmax equals the tau=1 logit-adjusted loss.
    assert float(build_loss("balanced-softmax", COUNTS)(*_t())) == pytest.approx(expected, rel=1e-6)
    # ... and differs from plain CE here
    assert abs(expected - float(build_loss("ce", COUNTS)(*_t()))) > 0.1


def test_sample_weights_weighted_mean():
    sw = torch.tensor([3.0, 1.0])
    l0, l1 = nll(LOGITS[0], 0), nll(LOGITS[1], 2)
    assert float(build_loss("ce", COUNTS)(*_t(), sw)) == pytest.approx((3 * l0 + l1) / 4, rel=1e-6)
    w = inverse_frequency_weights(COUNTS).tolist()
    got = float(build_loss("weighted-ce", COUNTS)(*_t(), sw))
    assert got == pytest.approx((3 * w[0] * l0 + w[2] * l1) / (3 * w[0] + w[2]), rel=1e-6)
    # all-ones weights give exactly the unweighted loss
    for name in LOSSES:
        fn = build_loss(name, COUNTS, epochs=1)
        assert float(fn(*_t(), torch.ones(2))) == pytest.approx(float(fn(*_t())), rel=1e-6)


def test_posthoc_adjust():
    z = np.array(LOGITS)
    adj = posthoc_adjust(z, COUNTS, tau=1.0)
    prior = np.array(COUNTS) / sum(COUNTS)
    assert np.allclose(adj, z - np.log(prior))
    # the rare class gains: sample 1 now predicts class 2
    assert z[1].argmax() == 1 and adj[1].argmax() == 2


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown loss 'bogus'.*ce"):
        build_loss("bogus", COUNTS)


def test_unknown_loss_options_are_errors():
    from tailsynth.errors import ConfigError

    with pytest.raises(ConfigError, match=r"loss 'ce': unknown option\(s\) focal_gamma \(takes: none\)"):
        build_loss("ce", COUNTS, focal_gamma=2.0)
    with pytest.raises(ConfigError, match=r"loss 'focal': unknown option\(s\) gamma \(takes: focal_gamma\)"):
        build_loss("focal", COUNTS, gamma=2.0)


def test_ce_drw_is_plain_ce_then_effective_number_weights():
    loss = build_loss("ce-drw", COUNTS, epochs=10)
    assert loss.drw_epoch == 8
    loss.set_epoch(7)
    assert float(loss(*_t())) == pytest.approx((nll(LOGITS[0], 0) + nll(LOGITS[1], 2)) / 2, rel=1e-6)
    loss.set_epoch(8)
    w = effective_number_weights(COUNTS, 0.9999).tolist()
    expected = (w[0] * nll(LOGITS[0], 0) + w[2] * nll(LOGITS[1], 2)) / (w[0] + w[2])
    assert float(loss(*_t())) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(Exception, match="unknown option"):
        build_loss("ce-drw", COUNTS, la_tau=1.0)
