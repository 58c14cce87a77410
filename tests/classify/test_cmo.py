"""CMO on constructed images: where the lesion lands, the area-mixed labels, who gets pasted on, and the loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from tailsynth.classify.augment import CMOConfig, CMOPaste, build_cmo
from tailsynth.data.classes import TAIL_CLASSES
from tailsynth.classify.losses import build_loss

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
NV, DF, VASC = CLASSES.index("NV"), CLASSES.index("DF"), CLASSES.index("VASC")
S = 8


def _square(top, left, side):
    m = np.zeros((S, S), bool)
    m[top : top + side, left : left + side] = True
    return m


def _foregrounds():
    """Two DF lesions (white, 2x2 and 4x4 squares) and one VASC (white, 3x3): uint8 images, labels, masks."""
    masks = np.stack([_square(0, 0, 2), _square(2, 2, 4), _square(1, 4, 3)])
    images = np.full((3, S, S, 3), 255, np.uint8)
    return images, np.array([DF, DF, VASC]), masks


def test_paste_puts_the_lesion_inside_its_mask_and_mixes_labels_by_area():
    images, labels, masks = _foregrounds()
    cmo = CMOPaste(images, labels, masks, CLASSES, CMOConfig(enabled=True, prob=1.0, rot90=False))
    x = torch.zeros(64, 3, S, S)  # black head-class backgrounds
    y = torch.full((64,), NV)
    out, y_b, lam = cmo(x, y, torch.ones(64, dtype=torch.bool), torch.Generator().manual_seed(0))
    areas = {m.sum() / (S * S): m for m in masks}
    for i in range(64):
        pasted = out[i, 0].numpy() == 1.0
        area = pasted.mean()
        assert area in areas  # exactly one foreground's mask, at its own position
        assert np.array_equal(pasted, areas[area])
        assert lam[i] == pytest.approx(1 - area)  # the background keeps the uncovered share of the label
        assert int(y_b[i]) == (VASC if area == 9 / 64 else DF)
        assert torch.all(out[i][:, ~torch.from_numpy(areas[area])] == 0)  # background untouched outside
    assert float(x.abs().sum()) == 0  # the input batch is not modified in place


def test_only_eligible_head_class_images_get_a_lesion():
    images, labels, masks = _foregrounds()
    cmo = CMOPaste(images, labels, masks, CLASSES, CMOConfig(enabled=True, prob=1.0))
    y = torch.tensor([NV, DF, VASC, NV])
    eligible = torch.tensor([True, True, True, False])  # the last row is a synthetic image
    out, y_b, lam = cmo(torch.zeros(4, 3, S, S), y, eligible, torch.Generator().manual_seed(1))
    assert lam.tolist()[1:] == [1.0, 1.0, 1.0] and y_b.tolist()[1:] == [DF, VASC, NV]
    assert float(out[1:].abs().sum()) == 0
    # Turned and flipped, the lesion keeps its area.
    assert lam[0] < 1 and float(out[0, 0].sum()) == pytest.approx((1 - float(lam[0])) * S * S)


def test_probability_and_minority_weighted_foregrounds():
    images, labels, masks = _foregrounds()
    cmo = CMOPaste(images, labels, masks, CLASSES, CMOConfig(enabled=True, prob=0.5, rot90=False))
    n = 4000
    _, y_b, lam = cmo(torch.zeros(n, 3, S, S), torch.full((n,), NV), torch.ones(n, dtype=torch.bool),
                      torch.Generator().manual_seed(2))
    pasted = lam < 1
    assert abs(float(pasted.float().mean()) - 0.5) < 0.03
    # power 1: each tail class equally often, although DF has two images and VASC one.
    share_vasc = float((y_b[pasted] == VASC).float().mean())
    assert abs(share_vasc - 0.5) < 0.04
    with pytest.raises(ValueError, match="none of the tail classes"):
        CMOPaste(images, labels, masks, CLASSES, CMOConfig(enabled=True, tail_classes=("SCC",)))
    with pytest.raises(ValueError, match="unknown option"):
        CMOConfig.from_dict({"probability": 0.5})


def test_mixed_loss_is_the_area_weighted_sum_of_both_labels():
    torch.manual_seed(0)
    logits = torch.randn(6, 7)
    y = torch.tensor([1, 1, 1, 0, 2, 1])
    y_b = torch.tensor([5, 6, 5, 0, 2, 1])
    lam = torch.tensor([0.7, 0.9, 0.5, 1.0, 1.0, 1.0])
    ce = build_loss("ce", [10] * 7)
    want = (lam * F.cross_entropy(logits, y, reduction="none")
            + (1 - lam) * F.cross_entropy(logits, y_b, reduction="none")).mean()
    assert float(ce(logits, y, None, y_b, lam)) == pytest.approx(float(want), rel=1e-6)
    assert float(ce(logits, y, None, y, torch.ones(6))) == pytest.approx(float(ce(logits, y)), rel=1e-6)
    # Class weights mix too: the normaliser is the area-weighted class weight of both labels.
    wce = build_loss("weighted-ce", [100, 50, 10, 10, 10, 5, 5])
    cw = wce.class_weight
    num = lam * cw[y] * F.cross_entropy(logits, y, reduction="none") + (1 - lam) * cw[y_b] * F.cross_entropy(
        logits, y_b, reduction="none")
    den = lam * cw[y] + (1 - lam) * cw[y_b]
    assert float(wce(logits, y, None, y_b, lam)) == pytest.approx(float(num.sum() / den.sum()), rel=1e-6)


def test_build_cmo_reads_the_projects_mask_files(tmp_path):
    from tailsynth_testdata import make_npz

    from tailsynth.data import load_source

    npz = make_npz(tmp_path / "t.npz")
    train = load_source(npz).split("train")
    x, y = train.arrays(28)
    mask_dir = tmp_path / "masks"
    mask_dir.mkdir()
    tail_rows = np.flatnonzero(np.isin(y, [CLASSES.index(c) for c in ("AK", "DF", "VASC")]))
    for k, i in enumerate(tail_rows):
        m = np.zeros((28, 28), np.uint8)
        m[: 2 + k, : 3] = 255  # a distinct area per image: 3 x (2 + k) pixels
        Image.fromarray(m).save(mask_dir / f"{train.records[i].image_id}.png")
    cmo = build_cmo({"prob": 1.0, "mask_dir": str(mask_dir)}, train, x, y, CLASSES)
    got = sorted(cmo.fg_masks.sum((1, 2, 3)).tolist())
    assert got == [3.0 * (2 + k) for k in range(len(tail_rows))]
    assert build_cmo({}, train, x, y, CLASSES) is None and build_cmo({"enabled": False}, train, x, y, CLASSES) is None


def test_training_with_cmo_records_it(tiny_npz, tmp_path):
    from tailsynth.classify.train import train_classifier

    m = train_classifier(tiny_npz, tmp_path / "c", backbone="test_resnet", epochs=1, threads=1, batch_size=16,
                         quiet=True, write_reports=False, cmo={"prob": 0.5})
    cfg = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())
    assert cfg["cmo"]["enabled"] and cfg["cmo"]["prob"] == 0.5 and cfg["cmo"]["tail_classes"] == list(TAIL_CLASSES)
    assert 0 <= m["balanced_accuracy"] <= 1
