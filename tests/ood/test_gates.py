"""Quality-gate functions on constructed data with known answers, and one tiny end-to-end `synth-quality`."""

import math

import numpy as np
import pytest

from tailsynth.data.errors import DataError

from tailsynth.ood.gates import (
    equal_n_distances,
    label_fidelity,
    replace_class,
    tos_verdict,
    write_npz,
)


def test_label_fidelity_is_the_mean_p_and_passes_at_eighty_percent_of_real():
    g = label_fidelity([0.4, 0.6, 0.5], [0.6, 0.6])
    assert g["label_fidelity"] == pytest.approx(0.5) and g["label_fidelity_real"] == pytest.approx(0.6)
    assert g["label_fidelity_ratio"] == pytest.approx(0.5 / 0.6) and g["label_fidelity_pass"]  # 0.833 >= 0.8
    assert not label_fidelity([0.47], [0.6])["label_fidelity_pass"]  # 0.783 < 0.8
    empty = label_fidelity([], [0.5])
    assert math.isnan(empty["label_fidelity"]) and not empty["label_fidelity_pass"]


def test_tos_verdict_ratio_and_threshold():
    assert tos_verdict(0.35, 0.5)["tos_pass"] and tos_verdict(0.35, 0.5)["tos_ratio"] == pytest.approx(0.7)
    assert not tos_verdict(0.3, 0.5)["tos_pass"]
    assert not tos_verdict(0.2, 0.0)["tos_pass"]  # a real-trained recall of 0 gives no ratio, not a pass


def test_replace_class_keeps_counts_and_swaps_only_that_class():
    rng = np.random.default_rng(0)
    x = np.arange(10)[:, None, None, None].repeat(2, 1).astype(np.uint8)
    y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
    syn = np.full((5, 2, 1, 1), 200, np.uint8)
    x2, y2 = replace_class(x, y, 1, syn, rng)
    assert np.bincount(y2).tolist() == np.bincount(y).tolist()
    assert (x2[y2 == 1] == 200).all()
    np.testing.assert_array_equal(np.sort(x2[y2 != 1][:, 0, 0, 0]), np.sort(x[y != 1][:, 0, 0, 0]))
    with pytest.raises(Exception, match="need 3"):
        replace_class(x, y, 1, syn[:2], rng)


def test_equal_n_distances_are_zero_for_the_same_distribution_scale_and_grow_with_a_shift():
    rng = np.random.default_rng(1)
    tr = rng.normal(0, 1, (400, 4))
    va = rng.normal(0, 1, (60, 4))
    same = equal_n_distances(rng.normal(0, 1, (300, 4)), tr, va)
    shifted = equal_n_distances(rng.normal(3, 1, (300, 4)), tr, va)
    assert same["n"] == shifted["n"] == 60
    assert shifted["fd_synthetic"] > 10 * max(same["fd_synthetic"], same["fd_real_val"])
    assert shifted["fd_synthetic"] == pytest.approx(4 * 9, rel=0.35)  # ||mu||^2 = 4 dims x 3^2
    assert shifted["kid_synthetic"] > same["kid_synthetic"]


def test_write_npz_reads_back_as_a_source_with_the_same_labels(tmp_path):
    from tailsynth.data import load_source

    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
    x = np.random.default_rng(0).integers(0, 255, (7, 28, 28, 3), dtype=np.uint8)
    y = np.arange(7)
    write_npz(tmp_path / "t.npz", classes, x, y, x[:3], y[:3])
    ds = load_source(tmp_path / "t.npz")
    got = [r.label for r in ds.split("train").records]
    assert sorted(got) == sorted(classes)
    for r in ds.split("train").records:
        np.testing.assert_array_equal(ds.image(r), x[classes.index(r.label)])


def test_synth_quality_end_to_end_tiny(tmp_path):
    """Tiny model, tiny npz, 1-epoch classifiers: every figure is present and consistent with its parts."""
    from tailsynth.classify.model import feature_model
    from tailsynth.classify.train import train_classifier
    from tailsynth.diffusion.train import train_diffusion
    from tailsynth.ood.gates import GateConfig, run_gates
    from tests.ood.conftest import _fit_tiny_classifier
    from tests.tailsynth_testdata import make_npz

    npz = make_npz(tmp_path / "d.npz", {"train": [6, 4, 4, 4, 4, 20, 4], "val": [2, 2, 2, 2, 2, 4, 2]})
    train_diffusion(npz, "tiny", tmp_path / "m", resolution=28, steps=2, batch_size=4, log_every=1)
    # tiny's two blocks need a size divisible by 2: 28 works.
    _fit_tiny_classifier(npz, tmp_path / "clf")
    q = run_gates(GateConfig(model=str(tmp_path / "m"), data=str(npz), classifier=str(tmp_path / "clf"),
                             out=str(tmp_path / "q"), classes=["DF", "VASC"], steps=2, gate_epochs=1,
                             batch_size=4), feature_model(tmp_path / "clf"), train_classifier)
    from tailsynth.ood.gates import read_gates

    saved = read_gates(tmp_path / "q")
    assert saved["gates"] == q["gates"] and (tmp_path / "q" / "index.html").is_file()
    assert (tmp_path / "q" / q["grid"]).is_file()
    for mode in ("inpaint", "harmonize"):
        for c in ("DF", "VASC"):
            g = q["gates"][mode][c]
            assert g["n_synthetic"] == 4  # as many as the real training images of the class
            assert 0 <= g["label_fidelity"] <= 1 and 0 <= g["label_fidelity_real"] <= 1
            assert g["label_fidelity_pass"] == (g["label_fidelity"] >= 0.8 * g["label_fidelity_real"])
            assert g["tos_pass"] == (g["tos_recall"] >= 0.7 * g["real_recall"] > 0)
            assert g["memorized_fraction"] == 0.0 and g["n"] == 2
    assert set(q["tos_runs"]) == {"real", "inpaint_DF", "inpaint_VASC", "harmonize_DF", "harmonize_VASC"}
    # Per-candidate scores for paired comparisons: one row per candidate, and their mean is the gate figure.
    from tailsynth.ood.gates import read_scores

    scores = read_scores(tmp_path / "q" / "inpaint" / "gate_scores.csv")
    assert len(scores) == 8
    df = [p for c, p in scores.values() if c == "DF"]
    assert np.mean(df) == pytest.approx(q["gates"]["inpaint"]["DF"]["label_fidelity"], abs=1e-5)
    # --min-count raises the candidates per class (not the real images they are compared with).
    q2 = run_gates(GateConfig(model=str(tmp_path / "m"), data=str(npz), classifier=str(tmp_path / "clf"),
                              out=str(tmp_path / "q2"), classes=["DF", "VASC"], modes=["inpaint"], steps=2,
                              tos=False, min_count=6, batch_size=4), feature_model(tmp_path / "clf"),
                   train_classifier)
    assert {c: g["n_synthetic"] for c, g in q2["gates"]["inpaint"].items()} == {"DF": 6, "VASC": 6}
    assert all(g["n"] == 2 for g in q2["gates"]["inpaint"].values())
    from tailsynth.errors import ConfigError

    with pytest.raises(ConfigError, match="min_count"):
        GateConfig(model="m", data="d", classifier="c", out="o", min_count=-1)


def test_paired_fidelity_pairs_candidates_by_id_and_brackets_the_shift(tmp_path):
    from types import SimpleNamespace

    from tailsynth.ood.gates import paired_fidelity, read_scores, write_scores

    rng = np.random.default_rng(0)
    n = 60
    p_ref = rng.uniform(0.1, 0.9, n)
    ids = [f"syn_DF_s0_{i:05d}" for i in range(n)] + ["syn_AK_s0_00000"]
    cls_idx = np.array([0] * n + [1])

    def run(p, folder):
        sc = SimpleNamespace(ids=ids, class_names=["DF", "AK"], cls_idx=cls_idx,
                             scores={"p_intended": np.append(p, 0.5)})
        return read_scores(write_scores(tmp_path / f"{folder}.csv", sc))

    ref = run(p_ref, "ref")
    same = paired_fidelity(ref, run(p_ref, "same"), "DF")
    assert same["n_paired"] == n and same["mean_diff"] == 0 and same["ci95"] == [0.0, 0.0]
    worse = paired_fidelity(ref, run(p_ref - 0.05 + rng.normal(0, 0.01, n), "worse"), "DF")
    assert worse["ci95"][1] < -0.03 and abs(worse["mean_diff"] + 0.05) < 0.01
    with pytest.raises(DataError, match="VASC"):
        paired_fidelity(ref, ref, "VASC")
    with pytest.raises(FileNotFoundError, match="synth-quality"):
        read_scores(tmp_path / "missing.csv")
