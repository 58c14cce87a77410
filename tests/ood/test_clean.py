"""Cleaning by a real-data classifier: the three tests, relative Mahalanobis, and the comparison with chance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tailsynth.errors import ConfigError
from tailsynth.ood.clean import Prototypes, clean_mask, confidently_other, kept_vs_chance, label_fidelity
from tailsynth.ood.scores import fit_class_gaussians, relative_mahalanobis


def _clusters(n=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(3, d) * 4
    y = np.repeat(np.arange(3), n)
    return centres[y] + rng.normal(0, 1, (len(y), d)), y, centres


def test_prototype_band_keeps_the_aid_ring_only():
    x, y, centres = _clusters()
    protos = Prototypes.fit(x, y, 3)
    d0 = protos.spread[0]
    assert 0 < d0 < 1
    # Unit vectors at chosen (chord) distances from class 0's prototype, all meant as class 0
    c = protos.centres[0]
    o = np.zeros(8)
    o[5] = 1.0
    o -= (o @ c) * c
    o /= np.linalg.norm(o)
    radii = (0.5 * d0, 1.5 * d0, 3.0 * d0)
    pts = np.stack([np.cos(t) * c + np.sin(t) * o for t in (2 * np.arcsin(r / 2) for r in radii)])
    assert np.allclose(protos.distance(pts, np.zeros(3, int)), radii, rtol=1e-6)
    probs = np.tile([0.9, 0.05, 0.05], (3, 1))
    kept, why = clean_mask(pts, probs, np.zeros(3, int), np.zeros(3, bool), protos)
    assert kept.tolist() == [False, True, False]
    assert why["below_band"].tolist() == [True, False, False] and why["above_band"].tolist() == [False, False, True]


def test_confidently_another_class_and_memorized_are_removed():
    probs = np.array([[0.1, 0.85, 0.05], [0.5, 0.45, 0.05], [0.4, 0.55, 0.05]])
    target = np.zeros(3, int)
    assert confidently_other(probs, target, 0.8).tolist() == [True, False, False]
    assert confidently_other(probs, target, 0.5).tolist() == [True, False, True]
    x, y, _ = _clusters()
    protos = Prototypes.fit(x, y, 3)
    pts = x[:3]
    kept, why = clean_mask(pts, probs, target, np.array([False, False, True]), protos, band=(0.0, 10.0))
    assert kept.tolist() == [False, True, False] and why["memorized"].tolist() == [False, False, True]
    with pytest.raises(ConfigError):
        clean_mask(pts, probs, target, np.zeros(3, bool), protos, band=(2.0, 1.0))


def test_relative_mahalanobis_prefers_samples_nearer_their_own_class():
    x, y, centres = _clusters()
    g = fit_class_gaussians(x, y, 3)
    own, middle, other = centres[0], centres.mean(0), centres[1]
    r = relative_mahalanobis(np.stack([own, middle, other]), np.zeros(3, int), g)
    assert r[0] < 0 < r[2] and r[0] < r[1] < r[2]


def test_kept_vs_chance_reports_fidelity_and_fd_against_random_subsets():
    x, y, _ = _clusters(n=40)
    real = {0: x[y == 0]}
    rng = np.random.default_rng(1)
    feats = np.concatenate([x[y == 0][:20] + rng.normal(0, 0.1, (20, 8)), x[y == 1][:20]])
    target = np.zeros(40, int)
    probs = np.zeros((40, 3))
    probs[:20, 0], probs[20:, 1] = 1.0, 1.0
    kept = np.zeros(40, bool)
    kept[:20] = True
    rep = kept_vs_chance(real, feats, probs, target, kept, n_random=10)[0]
    assert rep["label_fidelity_kept"] == 1.0 and rep["label_fidelity_all"] == 0.5
    assert 0.2 < rep["label_fidelity_random"] < 0.8
    assert rep["fd_kept"] < rep["fd_random"] < rep["fd_all"] * 1.5
    assert label_fidelity(probs[:0], target[:0]) != label_fidelity(probs[:0], target[:0])  # nan when empty


def test_select_clean_end_to_end(ood_setup, tmp_path):
    from tailsynth.classify.model import feature_model
    from tailsynth.ood.select import select_candidates

    root, npz, gen = ood_setup
    q = select_candidates(gen, npz, feature_model(root / "clf"), tmp_path / "out", clean=True, clean_band=(0.0, 2.0),
                          report=False)
    assert q["selection"]["rule"] == "clean"
    cl = q["selection"]["cleaning"]
    assert set(cl["removed"]) == {"other_class", "below_band", "above_band", "memorized"}
    assert cl["removed"]["memorized"] >= 1  # the DF copy of a training image
    assert set(cl["per_class"]) == {"DF", "VASC"}
    scores = (tmp_path / "out" / "scores.csv").read_text().splitlines()
    kept = {row.split(",")[0] for row in scores[1:] if row.endswith(",1")}
    assert "DF_copy" not in kept and not any("_out_" in k for k in kept)
    json.loads((tmp_path / "out" / "quality.json").read_text())
    with pytest.raises(ConfigError, match="--clean selects by itself"):
        select_candidates(gen, npz, feature_model(root / "clf"), tmp_path / "o2", clean=True, gamma=0.5)
