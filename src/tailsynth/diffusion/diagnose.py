"""Diagnosis of a synthesizer before anyone trains it longer.

- One-step reconstruction: noise real validation images to t inside their lesion mask, predict x0 in one step and
  measure the error inside the mask, with the EMA (sampling) weights and the raw (last optimizer step) weights. A
  model whose EMA error is far above its raw error is being sampled with weights that still hold the random init.
- Sampler sweep: the same backgrounds, masks and seeds through each (sampler, steps, guidance); label fidelity under
  a real-only classifier and images/s, so the sampler is chosen on measured figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..data.classes import TAIL_CLASSES

DEFAULT_TIMESTEPS = (100, 300, 500)


def predict_x0(scheduler, xt, t, pred, prediction_type: str):
    ac = scheduler.alphas_cumprod.to(xt.device)[t].view(-1, 1, 1, 1)
    if prediction_type == "v_prediction":
        return ac.sqrt() * xt - (1 - ac).sqrt() * pred
    if prediction_type == "epsilon":
        return (xt - (1 - ac).sqrt() * pred) / ac.sqrt()
    return pred


def one_step_reconstruction(unet, scheduler, images: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                            timesteps=DEFAULT_TIMESTEPS, seed: int = 0, prediction_type: str = "v_prediction",
                            batch: int = 128) -> dict[int, float]:
    """Mean squared error (in [-1, 1] units) of the one-step x0 prediction inside the mask, per timestep."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in timesteps:
        num, den = 0.0, 0.0
        for i in range(0, len(images), batch):
            x0 = torch.from_numpy(images[i:i + batch].astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
            m = torch.from_numpy(masks[i:i + batch].astype(np.float32))[:, None]
            noise = torch.randn(x0.shape, generator=g)
            tt = torch.full((len(x0),), int(t), dtype=torch.long)
            xt = scheduler.add_noise(x0, noise, tt)
            with torch.no_grad():
                pred = unet(torch.cat([xt, x0 * (1 - m), m], 1), tt,
                            class_labels=torch.as_tensor(labels[i:i + batch])).sample
            x0_hat = predict_x0(scheduler, xt, tt, pred, prediction_type).clamp(-1, 1)
            num += float((((x0_hat - x0) ** 2) * m).sum()) / 3.0
            den += float(m.sum())
        out[int(t)] = num / max(den, 1.0)
    return out


def load_raw_unet(model_dir):
    """The raw weights of the last checkpoint (not the EMA used for sampling), or None without a checkpoint."""
    import torch
    from diffusers import UNet2DModel

    ck = Path(model_dir) / "checkpoint" / "state.pt"
    if not ck.is_file():
        return None
    unet = UNet2DModel.from_config(UNet2DModel.load_config(Path(model_dir) / "unet"))
    unet.load_state_dict(torch.load(ck, map_location="cpu", weights_only=False)["model"])
    return unet.float().eval()


def reconstruction_report(model_dir, data, n: int = 256, timesteps=DEFAULT_TIMESTEPS, seed: int = 0) -> dict:
    """One-step reconstruction on `n` real val images with their own masks and true labels, EMA vs raw."""
    from ..data import ensure_splits, load_source
    from ..masks import masks_for_records
    from .model import load_model

    unet, sched, meta = load_model(model_dir)
    res = int(meta["resolution"])
    val = ensure_splits(load_source(data), seed=0).split("val")
    rng = np.random.default_rng(seed)
    recs = [val.records[i] for i in sorted(rng.choice(len(val), min(n, len(val)), replace=False))]
    recs = [r for r in recs if r.label in meta["classes"]]
    images = np.stack([val.image(r, res) for r in recs])
    masks, _ = masks_for_records(val, recs, res, images=images)
    labels = np.array([meta["classes"].index(r.label) for r in recs])
    pt = meta.get("prediction_type", "v_prediction")
    out = {"n": len(recs), "step": meta.get("step"), "timesteps": list(timesteps),
           "ema": one_step_reconstruction(unet, sched, images, masks, labels, timesteps, seed, pt),
           "ema_null_label": one_step_reconstruction(unet, sched, images, masks,
                                                     np.full(len(labels), meta["null_class"]), timesteps, seed, pt)}
    raw = load_raw_unet(model_dir)
    if raw is not None:
        out["raw"] = one_step_reconstruction(raw, sched, images, masks, labels, timesteps, seed, pt)
    return out


def sampler_sweep(model_dir, data, score, out, configs, classes=TAIL_CLASSES, count: int = 48,
                  seed: int = 0) -> list[dict]:
    """Each config {sampler, steps, guidance} on the same plan (backgrounds, masks, seeds): label fidelity per
    class and images/s. SCORE(candidate folder) is the OOD stage's scoring under a real-only classifier
    (tailsynth.ood.select.score_candidates), passed in because scoring comes after diffusion in the package order."""
    from .generate import GenerateConfig, generate

    rows = []
    for c in configs:
        folder = Path(out) / f"{c['sampler']}_{c['steps']}_g{c['guidance']}"
        t0 = time.time()
        generate(GenerateConfig(model=str(model_dir), data=str(data), out=str(folder), classes=list(classes),
                                policy="fixed", count=count, seed=seed, batch_size=count, **c))
        wall = time.time() - t0
        sc = score(folder)
        fid = {}
        for name in classes:
            k = sc.class_names.index(name)
            fid[name] = float(sc.scores["p_intended"][sc.cls_idx == k].mean())
            fid[f"{name}_real"] = float(sc.val_scores["p_intended"][sc.val_cls == k].mean())
        rows.append({**c, "images_per_s": round(len(sc.ids) / wall, 2), "label_fidelity": fid,
                     "grids": [str(p) for p in sorted(folder.glob("grid_*.png"))]})
    (Path(out) / "sampler_sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows
