"""Harmonized candidates are compared with the real lesion they were made from."""

import csv
import shutil

import numpy as np


def test_near_copy_of_the_source_lesion_is_flagged_and_never_kept(ood_setup, tmp_path):
    from tailsynth.ood.candidates import SOURCE_COPY_RMS, read_candidates
    from tailsynth.classify.model import feature_model
    from tailsynth.ood.select import choose, score_candidates

    root, npz, gen = ood_setup
    g2 = tmp_path / "gen"
    shutil.copytree(gen, g2)
    rows = list(csv.DictReader((g2 / "manifest.csv").read_text().splitlines()))
    near = {"DF_in_0", "VASC_in_2"}
    with open(g2 / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rows[0], "mode", "source_id", "source_rms"])
        w.writeheader()
        for r in rows:
            moved = SOURCE_COPY_RMS / 4 if r["id"] in near else SOURCE_COPY_RMS * 5
            w.writerow({**r, "mode": "harmonize", "source_id": "train_00001", "source_rms": f"{moved:.5f}"})
    cands = read_candidates(g2)
    assert {cands.ids[i] for i in np.flatnonzero(cands.near_source_copies())} == near
    sc = score_candidates(g2, npz, feature_model(root / "clf"))
    flagged = {sc.ids[i] for i in np.flatnonzero(sc.memo.memorized)}
    assert near <= flagged
    assert sc.info["memorization"]["source_copies"] == 2
    kept, _, _ = choose(sc, gamma=0.9)
    assert not any(kept[sc.ids.index(i)] for i in near)


def test_inpainted_candidates_have_no_source_and_are_not_flagged_for_it(ood_setup):
    from tailsynth.ood.candidates import read_candidates

    _, _, gen = ood_setup
    c = read_candidates(gen)
    assert not c.near_source_copies().any() and set(c.source_ids) == {""}
