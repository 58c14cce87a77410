"""The sampling pipeline: a diffusers scheduler for the chosen sampler, seeded starting noise, and the
denoising loop with classifier-free guidance, run from pure noise (`inpaint`) or from a noised composite
(`harmonize`, SDEdit). Like a diffusers pipeline it owns the loop and borrows the scheduler; it knows nothing
of plans or files.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

SAMPLERS = ("ddim", "dpmsolver")


def make_scheduler(train_scheduler, sampler: str, steps: int):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if sampler == "ddim":
        s = DDIMScheduler.from_config(train_scheduler.config, clip_sample=False, set_alpha_to_one=False)
    elif sampler == "dpmsolver":
        s = DPMSolverMultistepScheduler.from_config(train_scheduler.config, algorithm_type="dpmsolver++",
                                                    solver_order=2)
    else:
        raise ConfigError(f"unknown sampler {sampler!r} (choose from {', '.join(SAMPLERS)})")
    s.set_timesteps(steps)
    return s


def _seeded_noise(seeds, r: int):
    import torch

    return torch.stack([torch.randn((3, r, r), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _to_model(images: np.ndarray, device):
    import torch

    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).to(device)


def _denoise(unet, sched, x, timesteps, known, m, labels, null_class: int, guidance: float,
             raw: bool = False) -> np.ndarray:
    """The sampling loop shared by both modes: conditional and null class in one batch of 2N, one UNet call per
    step. `unet` is a diffusers UNet (run eager) or a runtime.UNetRunner. Returns uint8 N,R,R,3, or with `raw` the
    float32 images in [-1, 1] before quantization (to compare runtimes)."""
    import torch

    from .runtime import as_runner

    run = as_runner(unet)
    y = torch.as_tensor(labels, dtype=torch.long, device=x.device)
    cfg = guidance != 1.0
    cond = torch.cat([known * (1.0 - m), m], 1)
    if cfg:
        cond = torch.cat([cond, cond])
        y = torch.cat([y, torch.full_like(y, null_class)])
    with torch.inference_mode():
        for t in timesteps:
            xin = sched.scale_model_input(x, t)
            xin = torch.cat([xin, xin]) if cfg else xin
            pred = run(torch.cat([xin, cond], 1), t, y)
            if cfg:
                pc, pu = pred.chunk(2)
                pred = pu + guidance * (pc - pu)
            x = sched.step(pred, t, x).prev_sample
        x = x.clamp(-1, 1)
        if not raw:
            x = ((x + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()


def inpaint(unet, train_scheduler, backgrounds: np.ndarray, masks: np.ndarray, labels: np.ndarray, seeds,
            null_class: int, sampler: str = "ddim", steps: int = 25, guidance: float = 1.5, device="cpu",
            raw: bool = False) -> np.ndarray:
    """Raw model output (uint8 N,R,R,3; float32 in [-1, 1] with `raw`) for backgrounds (uint8 N,R,R,3), masks
    (bool N,R,R), labels (int). `unet`: a diffusers UNet or a runtime.UNetRunner."""
    import torch

    r = backgrounds.shape[1]
    bg = _to_model(backgrounds, device)
    m = torch.from_numpy(masks.astype(np.float32))[:, None].to(device)
    sched = make_scheduler(train_scheduler, sampler, steps)
    x = _seeded_noise(seeds, r).to(device) * sched.init_noise_sigma
    return _denoise(unet, sched, x, sched.timesteps, bg, m, labels, null_class, guidance, raw)


def harmonize(unet, train_scheduler, composites: np.ndarray, masks: np.ndarray, labels: np.ndarray, seeds,
              null_class: int, strength: float = 0.5, sampler: str = "ddim", steps: int = 25, guidance: float = 1.5,
              device="cpu", raw: bool = False) -> np.ndarray:
    """SDEdit: noise each composite (uint8 N,R,R,3) to the timestep at `strength` of the schedule and denoise it
    with the label; the region outside the mask is given to the model as known, as in inpainting.
    Runs ceil(steps * strength) of the `steps`-step schedule."""
    import torch

    r = composites.shape[1]
    x0 = _to_model(composites, device)
    m = torch.from_numpy(masks.astype(np.float32))[:, None].to(device)
    sched = make_scheduler(train_scheduler, sampler, steps)
    n_run = max(1, min(steps, math.ceil(steps * strength)))
    start = steps - n_run
    timesteps = sched.timesteps[start:]
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start)  # multistep solvers keep a step index; start it mid-schedule
    t0 = timesteps[:1].repeat(len(composites))
    x = train_scheduler.add_noise(x0, _seeded_noise(seeds, r).to(device), t0.cpu()).to(device)
    return _denoise(unet, sched, x, timesteps, x0, m, labels, null_class, guidance, raw)
