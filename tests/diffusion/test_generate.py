import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tailsynth.data import load_source
from tailsynth.data.isic import decode_file
from tailsynth.diffusion.generate import (
    MANIFEST_COLUMNS,
    blend_alpha,
    class_targets,
    generate,
    merge_shards,
    paste_back,
)

GEN = dict(classes="DF,VASC", policy="fixed", count=3, steps=3, guidance=2.0, batch_size=2)


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_head_classes():
    from tailsynth.diffusion.generate import head_classes

    assert head_classes({"NV": 4693, "MEL": 779, "BKL": 769, "DF": 80}) == ["NV"]
    assert head_classes({"NV": 10, "MEL": 8, "BKL": 7, "DF": 1}) == ["NV", "MEL"]


def test_fill_to_head_policy():
    counts = {"NV": 100, "MEL": 40, "DF": 3, "VASC": 0}
    t = class_targets(counts, policy="fill-to-head", max_synthetic_per_real=10)
    assert t == {"MEL": 60, "DF": 30}  # DF capped at 10 per real; NV is the head; VASC has no images
    assert class_targets(counts, ["DF"], "fill-to-head", count=5, oversample=2.5) == {"DF": 13}
    assert class_targets(counts, ["DF", "MEL"], "fixed", count=4, oversample=1.5) == {"MEL": 6, "DF": 6}
    with pytest.raises(ValueError, match="count"):
        class_targets(counts, ["DF"], "fixed")
    with pytest.raises(ValueError, match="SCC"):
        class_targets(counts, ["SCC"], "fixed", count=1)


def test_outputs_format_and_provenance(tiny_model, tmp_path):
    model, data = tiny_model
    out = tmp_path / "g"
    res = generate(model, data, out, save_inputs=True, **GEN)
    assert res["n"] == 6 and res["per_class"] == {"DF": 3, "VASC": 3}
    rows = list(csv.DictReader(Path(out / "manifest.csv").read_text().splitlines()))
    assert set(MANIFEST_COLUMNS + ["background_path", "mask_path"]) <= set(rows[0])
    assert {r["model_hash"] for r in rows} == {res["model_hash"]}
    # Head-class backgrounds by default: the largest classes holding half the training images.
    bg = json.loads((out / "generation.json").read_text())["background_classes"]
    assert bg[0] == "NV" and "DF" not in bg and "VASC" not in bg
    assert {r["background_class"] for r in rows} <= set(bg)
    for c in ("DF", "VASC"):
        assert (out / f"grid_{c}.png").is_file()
    # The folder reads back as an ISIC-style source with the intended labels.
    ds = load_source(out)
    assert sorted(r.label for r in ds.records) == ["DF"] * 3 + ["VASC"] * 3
    assert ds.image(ds.records[0]).shape == (16, 16, 3)


def test_mask_zero_pixels_equal_background(tiny_model, tmp_path):
    model, data = tiny_model
    out = tmp_path / "g"
    generate(model, data, out, save_inputs=True, **GEN)
    changed_inside = 0
    for r in csv.DictReader(Path(out / "manifest.csv").read_text().splitlines()):
        img = decode_file(str(out / "images" / f"{r['id']}.png"))
        bg = decode_file(str(out / r["background_path"]))
        m = decode_file(str(out / r["mask_path"]))[..., 0]
        assert img.shape == bg.shape and m.shape == img.shape[:2]
        assert set(np.unique(m)) <= {0, 255}
        outside = m == 0
        assert outside.any()
        np.testing.assert_array_equal(img[outside], bg[outside])  # documented tolerance: 0
        changed_inside += int((img[~outside] != bg[~outside]).any())
    assert changed_inside >= 5  # and the lesion region really was repainted


def test_same_seed_is_byte_identical_other_seed_differs(tiny_model, tmp_path):
    model, data = tiny_model
    generate(model, data, tmp_path / "a", seed=3, **GEN)
    generate(model, data, tmp_path / "b", seed=3, **GEN)
    generate(model, data, tmp_path / "c", seed=4, **GEN)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        if k != "generation.json":  # holds the output-independent settings only, but paths differ? no: same
            assert a[k] == b[k], k
    assert a["generation.json"] == b["generation.json"]
    ia = sorted(v for k, v in a.items() if k.startswith("images/"))
    ic = sorted(v for k, v in _files(tmp_path / "c").items() if k.startswith("images/"))
    assert ia != ic


@pytest.mark.parametrize("n_shards", [2, 3])
def test_sharded_and_merged_equals_unsharded(tiny_model, tmp_path, n_shards):
    model, data = tiny_model
    generate(model, data, tmp_path / "full", save_inputs=True, **GEN)
    shards = []
    for i in range(1, n_shards + 1):
        d = tmp_path / f"s{i}"
        generate(model, data, d, shard=f"{i}/{n_shards}", save_inputs=True, **GEN)
        shards.append(d)
    assert json.loads((shards[0] / "generation.json").read_text())["shard"] == f"1/{n_shards}"
    merge_shards(shards, tmp_path / "merged")
    full, merged = _files(tmp_path / "full"), _files(tmp_path / "merged")
    assert full.keys() == merged.keys()
    for k in full:
        assert full[k] == merged[k], k


def test_merge_rejects_incomplete_or_mixed_shards(tiny_model, tmp_path):
    from tailsynth.data.errors import DataError

    model, data = tiny_model
    generate(model, data, tmp_path / "s1", shard="1/2", **GEN)
    with pytest.raises(DataError, match="shards 1..N"):
        merge_shards([tmp_path / "s1"], tmp_path / "m")
    generate(model, data, tmp_path / "s2", shard="2/2", seed=9, **GEN)
    with pytest.raises(DataError, match="seed"):
        merge_shards([tmp_path / "s1", tmp_path / "s2"], tmp_path / "m")


def test_bad_arguments_are_named(tiny_model, tmp_path):
    model, data = tiny_model
    with pytest.raises(ValueError, match="sampler"):
        generate(model, data, tmp_path / "x", sampler="euler", **{k: v for k, v in GEN.items()})
    with pytest.raises(ValueError, match="shard"):
        generate(model, data, tmp_path / "x", shard="0/2", **GEN)
    with pytest.raises(FileNotFoundError, match="tailsynth_diffusion.json"):
        generate(tmp_path, data, tmp_path / "x", **GEN)


def test_dpmsolver_and_borrowed_masks(tiny_model, tmp_path):
    model, data = tiny_model
    res = generate(model, data, tmp_path / "d", sampler="dpmsolver", mask_mode="class", **GEN)
    rows = list(csv.DictReader(Path(tmp_path / "d" / "manifest.csv").read_text().splitlines()))
    assert res["n"] == 6
    assert all(r["mask_source"].startswith("class:") and r["sampler"] == "dpmsolver" for r in rows)
    donors = {r["mask_source"].split(":", 1)[1] for r in rows}
    labels = {r.image_id: r.label for r in load_source(data).records}
    assert all(labels[d] == r["class"] for d, r in zip([r["mask_source"].split(":", 1)[1] for r in rows], rows))
    assert donors


def test_paste_back_blend_edges():
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True
    a = blend_alpha(m, feather=1.5)
    assert (a[~m] == 0).all() and a[4, 4] == 1.0 and 0 < a[2, 4] < 1
    bg = np.full((9, 9, 3), 10, np.uint8)
    gen = np.full((9, 9, 3), 250, np.uint8)
    out = paste_back(bg, gen, m, 1.5)
    assert (out[~m] == 10).all() and (out[4, 4] == 250).all() and 10 < out[2, 4, 0] < 250


def test_colour_stats_generated_vs_real(tiny_model, tmp_path):
    from tailsynth.diffusion.stats import compare_colours

    model, data = tiny_model
    generate(model, data, tmp_path / "g", save_inputs=True, **GEN)
    cmp = compare_colours(tmp_path / "g", data, 16)
    assert set(cmp) == {"DF", "VASC"}
    for v in cmp.values():
        assert v["generated"]["n"] == 3 and len(v["real"]["mean_rgb"]) == 3 and v["distance"] >= 0


def test_harmonize_keeps_background_outside_region_and_records_source(tiny_model, tmp_path):
    model, data = tiny_model
    out = tmp_path / "h"
    res = generate(model, data, out, save_inputs=True, mode="harmonize", strength=0.4, **GEN)
    assert res["n"] == 6 and res["mode"] == "harmonize"
    labels = {r.image_id: r.label for r in load_source(data).records}
    rows = list(csv.DictReader(Path(out / "manifest.csv").read_text().splitlines()))
    for r in rows:
        assert r["mode"] == "harmonize" and float(r["strength"]) == 0.4
        # The source is a real training lesion of the intended class, recorded by id.
        assert labels[r["source_id"]] == r["class"] and r["mask_source"] == f"source:{r['source_id']}"
        img = decode_file(str(out / "images" / f"{r['id']}.png"))
        bg = decode_file(str(out / r["background_path"]))
        comp = decode_file(str(out / "inputs" / f"{r['id']}_composite.png"))
        region = decode_file(str(out / r["mask_path"]))[..., 0] > 127
        np.testing.assert_array_equal(img[~region], bg[~region])  # the background stays, byte for byte
        # The composite holds the source lesion inside the region; source_rms is the output's distance to it.
        rms = np.sqrt((((img[region].astype(float) - comp[region].astype(float)) / 255) ** 2).mean())
        assert float(r["source_rms"]) == pytest.approx(rms, abs=1e-4)
    assert json.loads((out / "generation.json").read_text())["strength"] == 0.4


def test_harmonize_strength_controls_how_far_the_lesion_moves(tiny_model, tmp_path):
    model, data = tiny_model
    rms = {}
    for s in (0.1, 1.0):
        generate(model, data, tmp_path / f"s{s}", mode="harmonize", strength=s, seed=1, **GEN)
        rows = list(csv.DictReader(Path(tmp_path / f"s{s}" / "manifest.csv").read_text().splitlines()))
        rms[s] = np.mean([float(r["source_rms"]) for r in rows])
    assert rms[0.1] < rms[1.0]
    with pytest.raises(ValueError, match="strength"):
        generate(model, data, tmp_path / "x", mode="harmonize", strength=0.0, **GEN)
    with pytest.raises(ValueError, match="mode"):
        generate(model, data, tmp_path / "x", mode="paint", **GEN)
    with pytest.raises(ValueError, match="unknown setting"):
        generate(model, data, tmp_path / "x", colour="red", **GEN)


def test_composite_lesion_covers_both_lesions():
    from tailsynth.diffusion.generate import composite_lesion

    bg = np.full((8, 8, 3), 10, np.uint8)
    src = np.full((8, 8, 3), 200, np.uint8)
    bm = np.zeros((8, 8), bool)
    bm[0:2, 0:2] = True
    sm = np.zeros((8, 8), bool)
    sm[5:7, 5:7] = True
    comp, region = composite_lesion(bg, bm, src, sm, rot=0, flip=False, dilate=0)
    assert (region == (bm | sm)).all()
    # The source lesion itself; the background's own lesion gives way to the background's skin colour.
    assert (comp[sm] == 200).all() and (comp[bm] == 10).all() and (comp[~region] == 10).all()
    bg2 = bg.copy()
    bg2[bm] = 90  # a dark head-class lesion in the background
    comp2, _ = composite_lesion(bg2, bm, src, sm, rot=0, flip=False, dilate=0)
    assert (comp2[bm] == 10).all()
    _, turned = composite_lesion(bg, np.zeros_like(bm), src, sm, rot=2, flip=False, dilate=0)
    assert turned[1:3, 1:3].all() and turned.sum() == 4
