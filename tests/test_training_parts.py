"""The trainer parts both trainers share: one LR schedule, the optimizer's weight-decay groups, the saver."""

from __future__ import annotations

import pytest
import torch

from tailsynth.errors import ConfigError
from tailsynth.training import CheckpointSaver, create_optimizer, create_scheduler, warmup_cosine


def test_warmup_then_cosine_to_the_floor():
    f = [warmup_cosine(s, total=10, warmup=2, min_ratio=0.1) for s in range(12)]
    assert f[:2] == [0.5, 1.0] and f[2] == 1.0
    assert all(a >= b for a, b in zip(f[2:], f[3:])) and f[10] == pytest.approx(0.1) and f[11] == pytest.approx(0.1)
    assert warmup_cosine(0, total=4, warmup=0, min_ratio=0.0) == 1.0


def test_scheduler_follows_the_schedule():
    opt = create_optimizer(torch.nn.Linear(3, 2), "sgd", lr=1.0, weight_decay=0.0)
    sched = create_scheduler(opt, total_steps=10, warmup_steps=2, min_ratio=0.1)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([warmup_cosine(s, 10, 2, 0.1) for s in range(10)])


def test_optimizer_groups():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    split = create_optimizer(net, "adamw", lr=1e-3, weight_decay=0.05)
    assert [g["weight_decay"] for g in split.param_groups] == [0.05, 0.0]
    assert len(split.param_groups[0]["params"]) == 1 and len(split.param_groups[1]["params"]) == 3
    whole = create_optimizer(net, "adamw", lr=1e-3, weight_decay=0.05, decay_norm_and_bias=True)
    assert len(whole.param_groups) == 1 and len(whole.param_groups[0]["params"]) == 4
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        create_optimizer(net, "lion", lr=1e-3, weight_decay=0.0)


def test_checkpoint_saver_round_trip(tmp_path):
    saver = CheckpointSaver(tmp_path / "ck" / "state.pt")
    assert saver.load() is None
    saver.save({"step": 3, "w": torch.ones(2)})
    assert saver.load()["step"] == 3 and not (tmp_path / "ck" / "state.pt.tmp").exists()
