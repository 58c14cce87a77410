"""Training of the class-conditional inpainting UNet.

Recipe (chosen so a small model learns lesion colours on 2 CPU cores within an hour):
- masks are mostly the image's own lesion mask (randomly dilated), so the masked region holds the lesion
  whose class the label names; the rest are random ellipses, so the model also copes with odd shapes;
- the loss is weighted towards the masked region (outside it the output is pasted back anyway);
- class-balanced sampling, so tail classes are seen as often as the head;
- v-prediction on a cosine (squaredcos_cap_v2) schedule; labels dropped to the null class 10% of the time
  for classifier-free guidance; EMA weights are the ones saved for sampling;
- AdamW, linear warmup then cosine decay; flips and 90-degree rotations (dermoscopy has no "up").
Everything random comes from two seeded generators whose states are checkpointed, so an interrupted run
resumed from its checkpoint continues the same loss curve.

The `lean` size carries its own recipe (RECIPES), measured to converge on 2 CPU cores: min-SNR-5 loss weighting,
classes drawn in proportion to sqrt(n) (mild tail oversampling, so tail classes do not only borrow head features
and the head is not starved), EMA 0.998 with warm-up (half-life ~350 steps = ~7% of the images seen at 4,700 steps),
AdamW 1e-3 with 200 warm-up steps, batch 64, native 28 px.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.errors import DataError
from ..errors import ConfigError
from ..progress import Progress
from ..training import CheckpointSaver, create_optimizer, warmup_cosine
from .model import DEFAULT_RESOLUTION, META_FILE, SIZES, build_unet

DEFAULTS = {
    # size: (steps, batch, lr)
    "tiny": (200, 8, 1e-3),
    "lean": (4700, 64, 1e-3),
    "lean64": (6000, 64, 1e-3),
    "mid64": (6000, 64, 1e-3),
    "small": (3000, 32, 5e-4),
    "base": (50000, 64, 2e-4),
}
# Per-size overrides of DiffusionTrainConfig's defaults (an explicit option still wins).
RECIPES: dict[str, dict] = {
    "lean": dict(snr_gamma=5.0, class_sampling="sqrt", ema_half_life_frac=0.06, warmup=200),
    "lean64": dict(snr_gamma=5.0, class_sampling="sqrt", ema_half_life_frac=0.06, warmup=200),
    "mid64": dict(snr_gamma=5.0, class_sampling="sqrt", ema_half_life_frac=0.06, warmup=200),
}
PRECISIONS = ("fp32", "bf16", "auto")
CLASS_SAMPLING = ("balanced", "sqrt", "natural")
CHECKPOINT_STATE = "checkpoint/state.pt"  # resumable state; the sampling weights are OUT/unet
TIMESTEP_SAMPLING = ("uniform", "logit-normal")


@dataclass
class DiffusionTrainConfig:
    data: str
    size: str
    out: str
    resolution: int
    steps: int
    seed: int = 0
    init_from: str | None = None
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 100
    min_lr_frac: float = 0.1
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    # When set (and ema_decay is not given), the EMA decay is chosen so that its half-life is this fraction of the
    # planned steps: a fixed 0.999 keeps much of the random init after 800 steps and is too short after 50,000.
    ema_half_life_frac: float | None = None
    prediction_type: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"
    num_train_timesteps: int = 1000
    null_prob: float = 0.1
    real_mask_prob: float = 0.8
    outside_weight: float = 0.1
    # Class draw probability: balanced (equal), sqrt (proportional to sqrt(n)), natural (proportional to n).
    class_sampling: str = "balanced"
    # min-SNR-gamma loss weighting (Hang et al. 2023); None = plain MSE.
    snr_gamma: float | None = None
    # logit-normal biases training toward mid-noise timesteps, where the lesion's shape and colour are decided.
    timestep_sampling: str = "uniform"
    grad_accum: int = 1
    # CPU mixed precision: bf16 autocast with fp32 master weights. "auto" = bf16 where the CPU computes bf16 in
    # hardware (2.6x the fp32 images/s of lean64 at 64 px on an AVX512-BF16 EPYC), fp32 elsewhere. GPUs always
    # train under bf16 autocast. The default stays fp32 so earlier recipes reproduce bit for bit.
    precision: str = "fp32"
    checkpoint_every: int = 200
    max_minutes: float | None = None
    stop_at: int | None = None
    mask_dir: str | None = None
    splits: str | None = None
    device: str | None = None
    log_every: int = 10
    # Multi-GPU through accelerate (`accelerate launch`); the single-device path stays plain torch.
    distributed: bool = False
    classes: list = field(default_factory=list)


# ---- data ------------------------------------------------------------------------------------------
def load_training_data(data, resolution: int, mask_dir=None, splits=None, seed: int = 0):
    """(images uint8 N,R,R,3; labels int64 into classes; masks bool N,R,R; classes; mask methods)."""
    from ..data import ensure_splits, load_source
    from ..masks import masks_for_records

    ds = ensure_splits(load_source(data, splits=splits), seed=seed)
    train = ds.split("train")
    if len(train) == 0:
        raise DataError(f"{data}: no training images (split 'train' is empty)")
    images, _ = train.arrays(resolution)
    counts = train.class_counts()
    classes = [c for c in ds.classes if counts.get(c, 0) > 0]
    idx = {c: i for i, c in enumerate(classes)}
    labels = np.array([idx[r.label] for r in train.records], dtype=np.int64)
    masks, methods = masks_for_records(train, train.records, resolution, mask_dir=mask_dir, images=images)
    return images, labels, masks, classes, methods


def random_ellipses(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy = rng.uniform(0.3, 0.7, n)[:, None, None] * size
    cx = rng.uniform(0.3, 0.7, n)[:, None, None] * size
    a = rng.uniform(0.12, 0.35, n)[:, None, None] * size
    b = rng.uniform(0.12, 0.35, n)[:, None, None] * size
    th = rng.uniform(0, np.pi, n)[:, None, None]
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(th) + dy * np.sin(th)
    v = -dx * np.sin(th) + dy * np.cos(th)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def sample_batch(rng: np.random.Generator, images, labels, masks, batch: int, cfg: DiffusionTrainConfig, weights):
    """A training batch as float arrays: x0 in [-1,1] (N,3,R,R), mask (N,1,R,R) in {0,1}, labels."""
    n, size = len(images), images.shape[1]
    ids = rng.choice(n, size=batch, p=weights)
    x = images[ids].astype(np.float32) / 127.5 - 1.0
    m = masks[ids].copy()
    use_shape = rng.random(batch) >= cfg.real_mask_prob
    if use_shape.any():
        m[use_shape] = random_ellipses(rng, int(use_shape.sum()), size)
    # Random dilation (0..size/16 px) so the mask also covers the lesion border, as at generation time.
    dil = rng.integers(0, max(1, size // 16) + 1, batch)
    rot = rng.integers(0, 4, batch)
    flip = rng.random(batch) < 0.5
    from scipy import ndimage as ndi

    for i in range(batch):
        if dil[i]:
            m[i] = ndi.binary_dilation(m[i], iterations=int(dil[i]))
        if rot[i]:
            x[i] = np.rot90(x[i], rot[i], axes=(0, 1))
            m[i] = np.rot90(m[i], rot[i])
        if flip[i]:
            x[i] = x[i][:, ::-1]
            m[i] = m[i][:, ::-1]
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    m = np.ascontiguousarray(m[:, None].astype(np.float32))
    return x, m, labels[ids]


# ---- loss ------------------------------------------------------------------------------------------
def class_draw_weights(labels: np.ndarray, mode: str) -> np.ndarray:
    """Per-image draw probabilities so that class c is drawn with probability proportional to n_c**p
    (balanced p = 0, sqrt p = 0.5, natural p = 1)."""
    if mode not in CLASS_SAMPLING:
        raise ConfigError(f"unknown class_sampling {mode!r} (choose from {', '.join(CLASS_SAMPLING)})")
    p = {"balanced": 0.0, "sqrt": 0.5, "natural": 1.0}[mode]
    counts = np.bincount(labels)
    w = counts[labels].astype(np.float64) ** (p - 1.0)
    return w / w.sum()


def sample_timesteps(b: int, num_train_timesteps: int, mode: str, generator):
    import torch

    if mode == "uniform":
        return torch.randint(0, num_train_timesteps, (b,), generator=generator, device="cpu")
    if mode == "logit-normal":
        u = torch.sigmoid(torch.randn(b, generator=generator, device="cpu"))
        return (u * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)
    raise ConfigError(f"unknown timestep_sampling {mode!r} (choose from {', '.join(TIMESTEP_SAMPLING)})")


def min_snr_weight(scheduler, t, gamma: float, prediction_type: str):
    """min(SNR, gamma) expressed for the prediction target: / SNR for epsilon, / (SNR + 1) for v, 1 for x0."""
    import torch

    ac = scheduler.alphas_cumprod.to(t.device)[t]
    snr = ac / (1.0 - ac)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    if prediction_type == "epsilon":
        return clipped / snr
    return clipped


def diffusion_loss(unet, scheduler, x0, mask, labels, generator, null_class: int, null_prob: float = 0.1,
                   outside_weight: float = 0.1, prediction_type: str = "v_prediction", autocast=None,
                   snr_gamma: float | None = None, timestep_sampling: str = "uniform"):
    """Weighted MSE of the UNet's prediction for one batch (all tensors on the UNet's device)."""
    import torch

    b = x0.shape[0]
    dev = x0.device
    noise = torch.randn(x0.shape, generator=generator, device="cpu").to(dev)
    t = sample_timesteps(b, scheduler.config.num_train_timesteps, timestep_sampling, generator).to(dev)
    drop = torch.rand(b, generator=generator, device="cpu").to(dev) < null_prob
    labels = torch.where(drop, torch.full_like(labels, null_class), labels)
    xt = scheduler.add_noise(x0, noise, t)
    masked = x0 * (1.0 - mask)
    inp = torch.cat([xt, masked, mask], dim=1)
    if prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, noise, t)
    elif prediction_type == "epsilon":
        target = noise
    elif prediction_type == "sample":
        target = x0
    else:
        raise ConfigError(f"unknown prediction_type {prediction_type!r}")
    if autocast is not None:
        with autocast:
            pred = unet(inp, t, class_labels=labels).sample
    else:
        pred = unet(inp, t, class_labels=labels).sample
    w = mask + outside_weight * (1.0 - mask)
    if snr_gamma is not None:
        w = w * min_snr_weight(scheduler, t, snr_gamma, prediction_type).view(b, 1, 1, 1)
        # Normalise by the spatial weights only, so the SNR weight scales each sample's loss.
        return ((pred.float() - target) ** 2 * w).sum() / ((mask + outside_weight * (1.0 - mask)).sum() * 3.0)
    return ((pred.float() - target) ** 2 * w).sum() / (w.sum() * 3.0)


def ema_decay_for(steps: int, half_life_frac: float) -> float:
    """Decay whose half-life is `half_life_frac` of `steps` (e.g. 0.06 x 4,700 steps -> 282 steps -> 0.99754)."""
    if not 0 < half_life_frac < 1:
        raise ConfigError(f"ema_half_life_frac must be in (0, 1), got {half_life_frac}")
    return float(0.5 ** (1.0 / max(1.0, half_life_frac * steps)))


def training_autocast(device_type: str, precision: str):
    """The autocast context of a training step, or None for plain fp32."""
    import torch

    from .runtime import native_bf16

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if device_type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16" or (precision == "auto" and native_bf16("cpu")):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return None


# ---- checkpointing ---------------------------------------------------------------------------------
def _save(out: Path, unet, ema, opt, step: int, rng, gen, cfg: DiffusionTrainConfig, classes, data_info: dict):
    import torch

    state = {
        "step": step,
        "model": unet.state_dict(),
        "ema": [e.detach().cpu() for e in ema],
        "opt": opt.state_dict(),
        "np_rng": rng.bit_generator.state,
        "torch_rng": gen.get_state(),
    }
    CheckpointSaver(out / CHECKPOINT_STATE).save(state)
    # Sampling weights = EMA: swap them in, save, swap back.
    backup = [p.detach().clone() for p in unet.parameters()]
    with torch.no_grad():
        for p, e in zip(unet.parameters(), ema):
            p.copy_(e)
    unet.save_pretrained(out / "unet")
    with torch.no_grad():
        for p, b in zip(unet.parameters(), backup):
            p.copy_(b)
    meta = {
        "format": "tailsynth-diffusion/1",
        "size": cfg.size,
        "resolution": cfg.resolution,
        "classes": classes,
        "null_class": len(classes),
        "prediction_type": cfg.prediction_type,
        "step": step,
        "steps_planned": cfg.steps,
        "seed": cfg.seed,
        "data": data_info,
        "weights": "ema",
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _plain(unet, accel):
    return accel.unwrap_model(unet) if accel is not None else unet


def _read_loss_log(path: Path, upto: int) -> list[list[str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [r for r in rows if int(r[0]) <= upto]


@dataclass
class _Data:
    """The training split decoded once: images, labels, lesion masks, the class draw weights, and what the model's
    metadata records of the data."""

    images: np.ndarray  # uint8 N,R,R,3
    labels: np.ndarray  # int64 into classes
    masks: np.ndarray  # bool N,R,R
    classes: list[str]
    weights: np.ndarray  # per-image draw probabilities (class_draw_weights)
    info: dict


@dataclass
class _Run:
    """One call of train_diffusion: its context and everything the training loop steps and a checkpoint saves."""

    cfg: DiffusionTrainConfig
    out: Path
    device: object
    accel: object | None  # accelerate.Accelerator when distributed
    data: _Data
    unet: object
    scheduler: object  # the DDPM training scheduler
    opt: object
    ema: list
    rng: np.random.Generator  # batches, masks, augmentation
    gen: object  # torch.Generator: noise, timesteps, label drops
    step: int = 0
    losses: list[float] = field(default_factory=list)  # this call's steps

    @property
    def is_main(self) -> bool:
        return self.accel is None or self.accel.is_main_process


def _make_config(data, size, out, resolution, steps, seed, init_from, kw: dict) -> DiffusionTrainConfig:
    """The config from train_diffusion's arguments, the size's defaults and recipe filling what is not given."""
    if size not in SIZES:
        raise ConfigError(f"unknown model size {size!r} (choose from {', '.join(SIZES)})")
    d_steps, d_batch, d_lr = DEFAULTS[size]
    unknown = set(kw) - set(DiffusionTrainConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"train_diffusion: unknown option(s) {', '.join(sorted(unknown))}")
    kw.setdefault("batch_size", d_batch)
    kw.setdefault("lr", d_lr)
    for k, v in RECIPES.get(size, {}).items():
        kw.setdefault(k, v)
    total_steps = int(steps or d_steps)
    if kw.get("ema_half_life_frac") and "ema_decay" not in kw:
        kw["ema_decay"] = ema_decay_for(total_steps, kw["ema_half_life_frac"])
    return DiffusionTrainConfig(data=str(data), size=size, out=str(out),
                                resolution=int(resolution or DEFAULT_RESOLUTION[size]), steps=total_steps,
                                seed=seed, init_from=str(init_from) if init_from else None, **kw)


def _device(cfg: DiffusionTrainConfig):
    """(accelerate.Accelerator or None, device)."""
    import torch

    if not cfg.distributed:
        return None, torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        from accelerate import Accelerator
    except ImportError as e:
        raise ConfigError("--distributed needs the 'accelerate' package (pip install 'tailsynth[gpu]')") from e
    accel = Accelerator(cpu=cfg.device == "cpu")
    return accel, accel.device


def _load_data(cfg: DiffusionTrainConfig) -> _Data:
    import torch

    from ..hashing import data_revision

    images, labels, masks, classes, methods = load_training_data(
        cfg.data, cfg.resolution, cfg.mask_dir, cfg.splits, cfg.seed)
    cfg.classes = classes
    counts = np.bincount(labels, minlength=len(classes))
    weights = class_draw_weights(labels, cfg.class_sampling)
    sample_timesteps(1, cfg.num_train_timesteps, cfg.timestep_sampling, torch.Generator())  # validate early
    info = {"source": cfg.data, "revision": data_revision(cfg.data), "train_counts": dict(zip(classes, counts.tolist())),
            "mask_methods": {m: methods.count(m) for m in sorted(set(methods))}}
    return _Data(images, labels, masks, classes, weights, info)


def _initial_unet(cfg: DiffusionTrainConfig, n_classes: int):
    """A fresh UNet of the size, or the weights of cfg.init_from (which must fit the classes)."""
    from diffusers import UNet2DModel

    if not cfg.init_from:
        return build_unet(cfg.size, cfg.resolution, n_classes)
    init = Path(cfg.init_from)
    unet = UNet2DModel.from_pretrained(init / "unet" if (init / "unet").is_dir() else cfg.init_from).float()
    # (.float(): shipped weights are fp16)
    if unet.config.in_channels != 7 or unet.config.num_class_embeds != n_classes + 1:
        raise ConfigError(f"{cfg.init_from}: model has {unet.config.in_channels} input channels and "
                          f"{unet.config.num_class_embeds} class embeddings; need 7 and {n_classes + 1}")
    return unet


def _start(cfg: DiffusionTrainConfig, out: Path, device, accel, data: _Data, resume: bool) -> _Run:
    """Build (seeded) or resume the model, optimiser, EMA and generators; writes OUT/scheduler."""
    import torch
    from diffusers import DDPMScheduler

    torch.manual_seed(cfg.seed)
    unet = _initial_unet(cfg, len(data.classes))
    unet.to(device)
    if device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                              prediction_type=cfg.prediction_type, clip_sample=False)
    scheduler.save_pretrained(out / "scheduler")
    opt = create_optimizer(unet, "adamw", cfg.lr, cfg.weight_decay, decay_norm_and_bias=True)
    run = _Run(cfg, out, device, accel, data, unet, scheduler, opt, ema=[p.detach().clone() for p in unet.parameters()],
               rng=np.random.default_rng(cfg.seed), gen=torch.Generator().manual_seed(cfg.seed))
    st = CheckpointSaver(out / CHECKPOINT_STATE).load(map_location=device) if resume else None
    if st is not None:
        run.unet.load_state_dict(st["model"])
        run.opt.load_state_dict(st["opt"])
        run.ema = [e.to(device) for e in st["ema"]]
        run.rng.bit_generator.state = st["np_rng"]
        run.gen.set_state(st["torch_rng"])
        run.step = int(st["step"])
    if accel is not None:
        run.unet, run.opt = accel.prepare(run.unet, run.opt)
        if accel.process_index > 0:
            # Each rank draws its own batches and noise; rank 0 keeps the single-device stream.
            run.rng = np.random.default_rng([cfg.seed, accel.process_index, run.step])
            run.gen = torch.Generator().manual_seed(cfg.seed * 1009 + accel.process_index * 7919 + run.step)
    return run


def _open_loss_log(run: _Run) -> tuple[Path, float]:
    """(path of loss.csv, elapsed seconds it records): the log is cut back to the resumed step, so a resumed run
    continues one curve; other ranks than the main one write nowhere."""
    log_path = run.out / "loss.csv" if run.is_main else Path(os.devnull)
    rows = _read_loss_log(log_path, run.step) if run.is_main else []
    with open(log_path, "w", newline="") as f:
        csv.writer(f).writerows([["step", "loss", "lr", "elapsed_s"], *rows])
    return log_path, float(rows[-1][3]) if rows else 0.0


def _train_step(run: _Run, autocast) -> None:
    """One optimiser step over cfg.grad_accum batches, then the EMA update; appends the step's loss."""
    import torch

    cfg, d = run.cfg, run.data
    for g in run.opt.param_groups:
        g["lr"] = cfg.lr * warmup_cosine(run.step, cfg.steps, cfg.warmup, cfg.min_lr_frac)
    total = 0.0
    for _ in range(cfg.grad_accum):
        x, m, y = sample_batch(run.rng, d.images, d.labels, d.masks, cfg.batch_size, cfg, d.weights)
        x, m = torch.from_numpy(x).to(run.device), torch.from_numpy(m).to(run.device)
        y = torch.from_numpy(y).to(run.device)
        loss = diffusion_loss(run.unet, run.scheduler, x, m, y, run.gen, len(d.classes), cfg.null_prob,
                              cfg.outside_weight, cfg.prediction_type, autocast, cfg.snr_gamma,
                              cfg.timestep_sampling) / cfg.grad_accum
        if run.accel is not None:
            run.accel.backward(loss)  # gradients all-reduced across ranks
        else:
            loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(run.unet.parameters(), 1.0)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    run.step += 1
    decay = min(cfg.ema_decay, (1 + run.step) / (10 + run.step))
    with torch.no_grad():
        for e, p in zip(run.ema, run.unet.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
    run.losses.append(total)


def _timed_out(run: _Run, t0: float) -> bool:
    import torch

    timed_out = run.cfg.max_minutes is not None and (time.time() - t0) > run.cfg.max_minutes * 60
    if run.accel is not None:
        # Every rank must agree to stop, or the others wait forever in the next all-reduce.
        flag = torch.tensor([1.0 if timed_out else 0.0], device=run.device)
        timed_out = bool(run.accel.reduce(flag, reduction="sum").item() > 0)
    return timed_out


def _save_run(run: _Run) -> None:
    _save(run.out, _plain(run.unet, run.accel), run.ema, run.opt, run.step, run.rng, run.gen, run.cfg,
          run.data.classes, run.data.info)


def _train_loop(run: _Run, log_path: Path, prev_elapsed: float, stop: int, t0: float, bar) -> None:
    """Steps until `stop` (or max_minutes): loss.csv every log_every steps, a checkpoint every checkpoint_every."""
    cfg = run.cfg
    autocast = training_autocast(run.device.type, cfg.precision)
    run.unet.train()
    with open(log_path, "a", newline="") as logf:
        log = csv.writer(logf)
        while run.step < stop:
            _train_step(run, autocast)
            step, recent = run.step, float(np.mean(run.losses[-cfg.log_every:]))
            if step % cfg.log_every == 0 or step == stop:
                elapsed = prev_elapsed + time.time() - t0
                log.writerow([step, f"{recent:.6f}", f"{run.opt.param_groups[0]['lr']:.3e}", f"{elapsed:.1f}"])
                logf.flush()
                if bar is not None:
                    bar.update(step, loss=recent, img_s=round(bar.rate() * cfg.batch_size * cfg.grad_accum, 1))
            timed_out = _timed_out(run, t0)
            if (step % cfg.checkpoint_every == 0 or step == stop or timed_out) and run.is_main:
                _save_run(run)
            if timed_out:
                break


def train_diffusion(data, size, out, resolution=None, steps=None, seed=0, init_from=None, resume=True,
                    progress=False, **kw) -> dict:
    """Train (or resume) a diffusion model into OUT; returns a summary dict (steps, final loss, wall time)."""
    cfg = _make_config(data, size, out, resolution, steps, seed, init_from, kw)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    accel, device = _device(cfg)
    run = _start(cfg, out, device, accel, _load_data(cfg), resume)
    if run.is_main:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    log_path, prev_elapsed = _open_loss_log(run)

    stop = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
    t0 = time.time()
    bar = Progress(stop, f"train diffusion ({cfg.size})", start=run.step, unit="step") if progress and run.is_main \
        else None
    _train_loop(run, log_path, prev_elapsed, stop, t0, bar)
    if bar is not None:
        bar.close()
    if run.is_main and (run.step == 0 or not (out / "unet").is_dir()):
        _save_run(run)
    if accel is not None:
        accel.wait_for_everyone()
    wall = time.time() - t0
    losses = run.losses
    return {
        "out": str(out),
        "step": run.step,
        "steps_planned": cfg.steps,
        "steps_this_run": len(losses),
        "wall_s": round(wall, 1),
        "s_per_step": round(wall / len(losses), 4) if losses else None,
        "final_loss": round(float(np.mean(losses[-cfg.log_every:])), 5) if losses else None,
        "classes": run.data.classes,
    }
