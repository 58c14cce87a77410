"""Throughput of the inpainting diffusion model: training steps/s and synthesized images/s.

By model size, sampler and number of sampling steps, on CPU (and on a GPU when one is present: bf16 autocast,
channels_last, optional torch.compile, large batches). Random weights and inputs: throughput does not depend
on what the model has learned. Prints one JSON object (and writes it with --out).

  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_diffusion.py --sizes tiny,small --out bench.json
  # the old `small` size against the lean CPU recipe, side by side in one run (batch 64, as trained):
  .venv/bin/python benchmarks/bench_diffusion.py --sizes small,lean --train-batch 64 --train-steps 20 \
      --sample-batch 64 --samplers ddim,dpmsolver --steps 20,25 --out docs/results/diffusion/bench_small_vs_lean.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def bench_train(size, res, batch, device, n=3, compile_=False, precision="fp32"):
    import torch
    from diffusers import DDPMScheduler

    from tailsynth.diffusion.model import build_unet
    from tailsynth.diffusion.train import diffusion_loss

    unet = build_unet(size, res, 7).to(device)
    if device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    fwd = torch.compile(unet) if compile_ else unet
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    opt = torch.optim.AdamW(unet.parameters(), 1e-4)
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    m = (torch.rand(batch, 1, res, res, device=device) > 0.5).float()
    y = torch.randint(0, 7, (batch,), device=device)
    gen = torch.Generator().manual_seed(0)
    ac = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" or precision == "bf16" else None

    def step():
        loss = diffusion_loss(fwd, sched, x, m, y, gen, 7, autocast=ac)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (and compile)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / n
    return {"size": size, "resolution": res, "batch": batch, "s_per_step": round(dt, 4),
            "precision": "bf16" if ac is not None else "fp32",
            "steps_per_s": round(1 / dt, 3), "params_M": round(sum(p.numel() for p in unet.parameters()) / 1e6, 2)}


def bench_sample(size, res, batch, sampler, steps, guidance, device):
    import numpy as np
    import torch
    from diffusers import DDPMScheduler

    from tailsynth.diffusion.generate import inpaint
    from tailsynth.diffusion.model import build_unet

    unet = build_unet(size, res, 7).to(device).eval()
    if device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 255, (batch, res, res, 3), dtype=np.uint8)
    mk = rng.random((batch, res, res)) > 0.5
    lab = rng.integers(0, 7, batch)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.no_grad()
    with ctx:
        inpaint(unet, sched, bg[:2], mk[:2], lab[:2], range(2), 7, sampler, 2, guidance, device)  # warm-up
        t = time.perf_counter()
        inpaint(unet, sched, bg, mk, lab, range(batch), 7, sampler, steps, guidance, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    return {"size": size, "resolution": res, "batch": batch, "sampler": sampler, "steps": steps,
            "guidance": guidance, "images_per_s": round(batch / dt, 3), "s_per_image": round(dt / batch, 4)}


def main(argv=None):
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="tiny,small")
    p.add_argument("--resolution", type=int, default=None, help="default: 16 tiny, 32 small, 64 base")
    p.add_argument("--samplers", default="ddim,dpmsolver")
    p.add_argument("--steps", default="10,25")
    p.add_argument("--guidance", type=float, default=1.5)
    p.add_argument("--train-batch", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=3, help="timed training steps per size (after one warm-up)")
    p.add_argument("--sample-batch", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet for the training benchmark")
    p.add_argument("--device", default=None)
    p.add_argument("--train-precision", default="fp32", help="fp32 | bf16 | fp32,bf16 (CPU autocast) for training")
    p.add_argument("--no-sample", action="store_true", help="training throughput only")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    from tailsynth.diffusion.model import DEFAULT_RESOLUTION

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    res = {"device": torch.cuda.get_device_name(0) if gpu else platform.processor() or "cpu",
           "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0], "train": [], "sample": []}
    for size in a.sizes.split(","):
        r = a.resolution or DEFAULT_RESOLUTION[size]
        tb = a.train_batch or (256 if gpu else 32)
        sb = a.sample_batch or (512 if gpu else 32)
        for prec in a.train_precision.split(","):
            res["train"].append(bench_train(size, r, tb, device, n=a.train_steps, compile_=a.compile, precision=prec))
            res["train"][-1]["images_per_s"] = round(tb * res["train"][-1]["steps_per_s"], 1)
            print(json.dumps(res["train"][-1]), flush=True)
        for sampler in ([] if a.no_sample else a.samplers.split(",")):
            for st in (int(s) for s in a.steps.split(",")):
                res["sample"].append(bench_sample(size, r, sb, sampler, st, a.guidance, device))
                print(json.dumps(res["sample"][-1]), flush=True)
    res["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(res))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
