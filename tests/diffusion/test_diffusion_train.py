import csv
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_isic_folder


def test_tiny_model_overfits_a_fixed_batch():
    import torch
    from diffusers import DDPMScheduler

    from tailsynth.diffusion.model import build_unet
    from tailsynth.diffusion.train import diffusion_loss

    torch.manual_seed(0)
    unet = build_unet("tiny", 16, num_classes=3)
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    rng = np.random.default_rng(0)
    x0 = torch.from_numpy(rng.uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32))
    mask = torch.zeros(4, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    y = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        gen = torch.Generator().manual_seed(1)  # same noise and timesteps every step: a fixed batch
        loss = diffusion_loss(unet, sched, x0, mask, y, gen, null_class=3, null_prob=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


def _rows(path):
    return list(csv.reader(Path(path).read_text().splitlines()))[1:]


def test_resume_continues_the_loss_curve(tmp_path):
    from tailsynth.diffusion.train import train_diffusion

    labels = ["NV"] * 6 + ["DF"] * 3 + ["VASC"] * 3
    data = make_isic_folder(tmp_path / "isic", labels, size=16)
    kw = dict(resolution=16, steps=6, batch_size=4, log_every=1, checkpoint_every=100, warmup=2)
    full = train_diffusion(data, "tiny", tmp_path / "full", **kw)
    part = train_diffusion(data, "tiny", tmp_path / "part", stop_at=3, **kw)
    assert part["step"] == 3 and len(_rows(tmp_path / "part" / "loss.csv")) == 3
    resumed = train_diffusion(data, "tiny", tmp_path / "part", **kw)
    assert resumed["step"] == 6 and resumed["steps_this_run"] == 3
    a = np.array([[float(v) for v in r[:3]] for r in _rows(tmp_path / "full" / "loss.csv")])
    b = np.array([[float(v) for v in r[:3]] for r in _rows(tmp_path / "part" / "loss.csv")])
    assert a.shape == b.shape == (6, 3)
    np.testing.assert_allclose(a, b, rtol=1e-4)
    assert full["final_loss"] == pytest.approx(resumed["final_loss"], rel=1e-4)


def test_model_folder_layout(tiny_model):
    import json

    from tailsynth.diffusion.model import load_model, model_hash

    model, _ = tiny_model
    for p in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
              "tailsynth_diffusion.json", "config.json", "loss.csv", "checkpoint/state.pt"):
        assert (model / p).is_file(), p
    unet, _sched, meta = load_model(model)
    assert unet.config.in_channels == 7
    assert unet.config.num_class_embeds == len(meta["classes"]) + 1 == meta["null_class"] + 1
    assert json.loads((model / "config.json").read_text())["size"] == "tiny"
    assert len(model_hash(model)) == 12


def test_unknown_size_is_rejected(tmp_path):
    from tailsynth.diffusion.train import train_diffusion

    with pytest.raises(ValueError, match="huge"):
        train_diffusion(tmp_path, "huge", tmp_path / "o")


def test_init_from_a_local_checkpoint(tiny_model, tmp_path):
    import torch
    from diffusers import UNet2DModel

    from tailsynth.diffusion.train import train_diffusion

    model, data = tiny_model
    res = train_diffusion(data, "tiny", tmp_path / "ft", resolution=16, steps=1, batch_size=2, init_from=model, lr=1e-12)
    assert res["step"] == 1
    a = UNet2DModel.from_pretrained(model / "unet").state_dict()
    b = UNet2DModel.from_pretrained(tmp_path / "ft" / "unet").state_dict()
    # Started from the given weights: one step at lr 1e-12 leaves them (nearly) unchanged.
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_accelerate_path_matches_plain_training_on_one_process(tmp_path):
    """The multi-GPU path (accelerate) with one process must train exactly like the plain single-device loop."""
    pytest.importorskip("accelerate", reason="the 'gpu' extra (accelerate) is not installed")
    from tailsynth.diffusion.train import train_diffusion

    labels = ["NV"] * 6 + ["DF"] * 3 + ["VASC"] * 3
    data = make_isic_folder(tmp_path / "isic", labels, size=16)
    kw = dict(resolution=16, steps=4, batch_size=4, log_every=1, checkpoint_every=100, warmup=2, device="cpu")
    plain = train_diffusion(data, "tiny", tmp_path / "plain", **kw)
    dist = train_diffusion(data, "tiny", tmp_path / "dist", distributed=True, **kw)
    assert dist["step"] == plain["step"] == 4
    a = np.array([float(r[1]) for r in _rows(tmp_path / "plain" / "loss.csv")])
    b = np.array([float(r[1]) for r in _rows(tmp_path / "dist" / "loss.csv")])
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert (tmp_path / "dist" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_class_draw_weights_follow_the_chosen_power():
    from tailsynth.diffusion.train import class_draw_weights

    labels = np.array([0] * 100 + [1] * 25 + [2] * 4)
    for mode, p in (("balanced", 0.0), ("sqrt", 0.5), ("natural", 1.0)):
        w = class_draw_weights(labels, mode)
        per_class = np.array([w[labels == c].sum() for c in range(3)])
        expect = np.array([100, 25, 4], float) ** p
        np.testing.assert_allclose(per_class, expect / expect.sum(), rtol=1e-9)
    with pytest.raises(ValueError, match="class_sampling"):
        class_draw_weights(labels, "cubic")


def test_min_snr_weight_for_v_prediction_is_min_snr_over_snr_plus_one():
    import torch
    from diffusers import DDPMScheduler

    from tailsynth.diffusion.train import min_snr_weight

    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    t = torch.tensor([0, 200, 500, 800, 999])
    ac = sched.alphas_cumprod[t]
    snr = ac / (1 - ac)
    w = min_snr_weight(sched, t, 5.0, "v_prediction")
    np.testing.assert_allclose(w.numpy(), (torch.clamp(snr, max=5.0) / (snr + 1)).numpy(), rtol=1e-6)
    # Low noise (high SNR) is down-weighted, high noise keeps weight ~ SNR/(SNR+1) < 1.
    assert w[0] < 0.01 and w[-1] < w[2]
    eps = min_snr_weight(sched, t, 5.0, "epsilon")
    np.testing.assert_allclose(eps.numpy(), (torch.clamp(snr, max=5.0) / snr).numpy(), rtol=1e-6)


def test_logit_normal_timesteps_concentrate_on_mid_noise():
    import torch

    from tailsynth.diffusion.train import sample_timesteps

    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(20000, 1000, "logit-normal", g).float()
    u = sample_timesteps(20000, 1000, "uniform", g).float()
    mid = lambda x: ((x > 250) & (x < 750)).float().mean().item()
    assert mid(t) > 0.6 > mid(u) > 0.45
    assert t.min() >= 0 and t.max() <= 999
    with pytest.raises(ValueError, match="timestep_sampling"):
        sample_timesteps(2, 1000, "cosine", g)


def test_lean_size_takes_its_recipe_and_options_still_win(tmp_path):
    import json

    from tailsynth.diffusion.train import train_diffusion

    labels = ["NV"] * 6 + ["DF"] * 3 + ["VASC"] * 3
    data = make_isic_folder(tmp_path / "isic", labels, size=28)
    train_diffusion(data, "lean", tmp_path / "m", steps=2, batch_size=4, log_every=1, ema_decay=0.99)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["resolution"] == 28 and cfg["snr_gamma"] == 5.0 and cfg["class_sampling"] == "sqrt"
    assert cfg["ema_decay"] == 0.99 and cfg["warmup"] == 200
    train_diffusion(data, "lean", tmp_path / "m2", steps=2, batch_size=4, log_every=1)
    cfg2 = json.loads((tmp_path / "m2" / "config.json").read_text())
    # Half-life = 6% of the planned steps: 0.5 ** (1 / max(1, 0.12)) = 0.5.
    assert cfg2["ema_decay"] == pytest.approx(0.5) and cfg2["ema_half_life_frac"] == 0.06
