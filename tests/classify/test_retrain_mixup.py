"""mixup and classifier re-training (cRT): what they change, on tiny data with the real trainer."""

import numpy as np
import pytest
import torch
import yaml

from tailsynth.classify.model import load_classifier
from tailsynth.classify.train import mixup, train_classifier
from tailsynth.errors import ConfigError

FAST = dict(backbone="test_resnet", threads=1, batch_size=16, quiet=True, write_reports=False)


def test_mixup_mixes_with_a_permutation_and_is_seeded():
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 2, 2).contiguous()
    y = torch.arange(8)
    xm, yb, lam = mixup(x, y, 0.4, torch.Generator().manual_seed(1))
    assert sorted(yb.tolist()) == list(range(8)) and lam.shape == (8,)
    lv = float(lam[0])
    assert 0 <= lv <= 1 and torch.allclose(lam, torch.full((8,), lv))
    assert torch.allclose(xm[:, 0, 0, 0], lv * y.float() + (1 - lv) * yb.float())
    again = mixup(x, y, 0.4, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], xm) and torch.equal(again[1], yb)


def test_mixup_run_differs_from_plain_and_resumes(tiny_npz, tmp_path):
    plain = train_classifier(tiny_npz, tmp_path / "plain", epochs=2, seed=0, **FAST)
    mixed = train_classifier(tiny_npz, tmp_path / "mix", epochs=2, seed=0, mixup_alpha=0.4, **FAST)
    hp = yaml.safe_load((tmp_path / "plain" / "config.yaml").read_text())
    hm = yaml.safe_load((tmp_path / "mix" / "config.yaml").read_text())
    assert hm["mixup_alpha"] == 0.4 and hp["mixup_alpha"] == 0.0
    lp = [h["loss"] for h in yaml.safe_load((tmp_path / "plain" / "history.json").read_text())]
    lm = [h["loss"] for h in yaml.safe_load((tmp_path / "mix" / "history.json").read_text())]
    assert lp != lm
    assert plain.keys() == mixed.keys()
    with pytest.raises(ConfigError, match="mixup_alpha"):
        train_classifier(tiny_npz, tmp_path / "bad", epochs=1, mixup_alpha=-1.0, **FAST)


def test_crt_refits_only_the_head(tiny_npz, tmp_path):
    train_classifier(tiny_npz, tmp_path / "base", epochs=2, seed=0, **FAST)
    train_classifier(tiny_npz, tmp_path / "crt", epochs=2, seed=0, crt_epochs=3, **FAST)
    a, _ = load_classifier(tmp_path / "base")
    b, meta = load_classifier(tmp_path / "crt")
    sa, sb = a.state_dict(), b.state_dict()
    head = {n for n, _ in b.get_classifier().named_parameters()}
    changed = {k for k in sa if not torch.equal(sa[k], sb[k])}
    assert changed and all(k.split(".")[-1] in head and k.startswith(("fc", "head", "classifier")) for k in changed)
    crt = meta.config["crt"]
    assert crt["epochs"] == 3 and crt["sampler"] == "class-balanced"
    assert np.isfinite(crt["val_balanced_accuracy"]) and np.isfinite(crt["val_balanced_accuracy_before"])
