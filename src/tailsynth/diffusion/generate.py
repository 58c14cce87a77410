"""Tail-class synthesis: policy -> plan of candidates -> batched inpainting or harmonization -> paste-back -> provenance.

Two modes:
- `inpaint`: the background's lesion region is blanked and the model paints a lesion of the target class into it
  from pure noise (the model must invent the lesion);
- `harmonize`: a real lesion of the target class (with its own mask, randomly flipped/rotated) is pasted onto the
  head-class background, the composite is noised to `strength` (0 = untouched, 1 = pure noise) and denoised
  with the target label, SDEdit-style (Meng et al. 2022): the model only blends and varies a real lesion, the
  generative cousin of CMO's copy-paste (Park et al. 2022). The manifest records the source lesion and how far
  the result moved from it (`source_rms`), so selection can drop near-copies of the source.

Determinism and sharding: the whole plan (which background, which mask, which noise seed for every
candidate) is computed up front from `seed` alone, cheaply, in every process. Sampling runs in fixed
units of `batch_size` consecutive candidates of one class ("class x seed range"); a shard runs a
contiguous range of units. Since a unit's batch is the same in a sharded and an unsharded run, and every
candidate's starting noise comes from its own seed, merged shards are byte-identical to one run.

Paste-back: the model sees the background with the mask region blanked; its output is blended back with
alpha = 1 deep inside the mask, falling linearly to 0 over `feather` pixels at the mask edge, and exactly
0 outside. So every pixel where the mask is 0 equals the background byte for byte (tolerance 0); within
`feather` px inside the mask edge pixels are a blend of background and generated lesion.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.classes import ISIC2019_CLASSES
from ..data.errors import DataError
from ..errors import ConfigError
from .runtime import check_runtime

POLICIES = ("fill-to-head", "fixed")
SAMPLERS = ("ddim", "dpmsolver")
MASK_MODES = ("own", "class")
MODES = ("inpaint", "harmonize")
MANIFEST_COLUMNS = ["id", "class", "background_id", "background_class", "mask_source", "mask_method",
                    "mask_coverage", "seed", "sampler", "steps", "guidance", "model_hash", "index",
                    "mode", "strength", "source_id", "source_rms"]
GT_FILE = "synthetic_ground_truth.csv"
GRID_COUNT = 32


@dataclass
class Candidate:
    index: int  # position in the global plan
    id: str
    cls: str
    background: int  # index into the background pool
    mask_donor: int | None  # index into the class pool: borrowed mask (inpaint) or source lesion (harmonize)
    seed: int
    unit: int


@dataclass
class GenerateConfig:
    """Every setting of one generation run (written to OUT/generation.json, minus run-local fields)."""

    model: str
    data: str
    out: str
    classes: list[str] | None = None
    policy: str = "fill-to-head"
    count: int | None = None
    oversample: float = 1.0
    mode: str = "inpaint"
    strength: float = 0.5  # harmonize only: the share of the noise schedule the composite is sent back through
    # None: what the model's card records (diffusion.model.recorded_sampling), so its gates hold for the output.
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    shard: str | tuple | None = None
    save_inputs: bool = False
    mask_mode: str = "own"
    masks: str | None = None
    background_classes: list[str] | None = None
    max_synthetic_per_real: float = 10
    batch_size: int = 32
    feather: float | None = None
    mask_dilate: int | None = None
    splits: str | None = None
    device: str | None = None
    progress: bool = False
    # How the UNet runs (diffusion/runtime.py). fp32 runtimes agree with eager to float rounding; bf16 changes the
    # outputs by a few uint8 levels and was gated equal on the shipped synthesizer. auto: bf16 where the CPU does
    # bf16 natively, fp32 elsewhere (what ran is recorded in generation.json).
    runtime: str = "eager"
    channels_last: bool = False
    precision: str = "auto"
    threads: int | None = None  # torch (and ORT) intra-op threads for this run; None: leave the process setting
    runtime_cache: str | None = None  # folder for exported ONNX graphs (default: ~/.cache/tailsynth)

    def __post_init__(self):
        if None in (self.sampler, self.steps, self.guidance):
            from .model import recorded_sampling

            recorded = recorded_sampling(self.model)
            for k in ("sampler", "steps", "guidance"):
                if getattr(self, k) is None:
                    setattr(self, k, recorded[k])
        if isinstance(self.classes, str):
            self.classes = [c.strip() for c in self.classes.split(",") if c.strip()]
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r} (choose from {', '.join(SAMPLERS)})")
        if self.mask_mode not in MASK_MODES:
            raise ConfigError(f"unknown mask mode {self.mask_mode!r} (choose from {', '.join(MASK_MODES)})")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        if self.mode == "harmonize" and not 0.05 <= self.strength <= 1.0:
            raise ConfigError(f"--strength must lie in [0.05, 1] for harmonize, got {self.strength}")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("steps and batch_size must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        check_runtime(self.runtime, self.channels_last, self.precision)
        for k in ("model", "data", "out", "masks", "splits", "runtime_cache"):
            v = getattr(self, k)
            if v is not None and not isinstance(v, str):
                setattr(self, k, str(v))

    @classmethod
    def from_dict(cls, d: dict) -> GenerateConfig:
        """From a dict (e.g. a --config YAML); unknown keys are errors, not silently ignored."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"generate: unknown setting(s) {', '.join(unknown)}")
        return cls(**d)


# ---- policy ------------------------------------------------------------------------------------------
def class_targets(counts: dict[str, int], classes=None, policy: str = "fill-to-head", count: int | None = None,
                  oversample: float = 1.0, max_synthetic_per_real: float = 10) -> dict[str, int]:
    """Candidates to generate per class.

    fill-to-head: n(c) = min(max(0, N_head - N_c), max_synthetic_per_real * N_c), capped at `count` if given;
    fixed: n(c) = count. Both are multiplied by `oversample` (1/gamma of the later selection step), rounded up.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
    if oversample <= 0:
        raise ConfigError(f"oversample must be > 0, got {oversample}")
    present = {c: n for c, n in counts.items() if n > 0}
    if classes:
        bad = [c for c in classes if c not in present]
        if bad:
            raise ConfigError(f"class(es) {', '.join(bad)} not in the model/training data (have {', '.join(present)})")
    n_head = max(present.values())
    out = {}
    for c, n in present.items():
        if classes and c not in classes:
            continue
        if policy == "fixed":
            if count is None:
                raise ConfigError("policy 'fixed' needs --count")
            base = count
        else:
            base = min(max(0, n_head - n), int(max_synthetic_per_real * n))
            if count is not None:
                base = min(base, count)
        k = math.ceil(base * oversample)
        if k > 0:
            out[c] = k
    return out


def head_classes(counts: dict[str, int], share: float = 0.5) -> list[str]:
    """The largest classes that together hold at least `share` of the images (NV alone on DermaMNIST and on
    ISIC 2019, whose NV is 67% and 51% of the training images)."""
    total = sum(counts.values())
    out, acc = [], 0
    for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if acc >= share * total or n == 0:
            break
        out.append(c)
        acc += n
    return out


def parse_shard(shard) -> tuple[int, int] | None:
    """'I/N' with 1 <= I <= N -> (I, N)."""
    if shard is None or shard == "":
        return None
    if isinstance(shard, tuple):
        i, n = shard
    else:
        try:
            i, n = (int(v) for v in str(shard).split("/"))
        except ValueError:
            raise ConfigError(f"--shard must look like I/N (e.g. 1/4), got {shard!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise ConfigError(f"--shard {i}/{n}: need 1 <= I <= N")
    return i, n


def make_plan(targets: dict[str, int], classes: list[str], n_backgrounds: int, class_pool_sizes: dict[str, int],
              seed: int, batch_size: int, mask_mode: str, mode: str = "inpaint") -> list[Candidate]:
    plan: list[Candidate] = []
    unit = 0
    for c in [c for c in classes if c in targets]:
        ci = classes.index(c)
        rng = np.random.default_rng([seed, ci])
        n = targets[c]
        bgs = rng.integers(0, n_backgrounds, n)
        needs_donor = mask_mode == "class" or mode == "harmonize"
        donors = rng.integers(0, class_pool_sizes[c], n) if needs_donor else [None] * n
        seeds = rng.integers(0, 2**31 - 1, n)
        for k in range(n):
            plan.append(Candidate(len(plan), f"syn_{c}_s{seed}_{k:05d}", c, int(bgs[k]),
                                  None if donors[k] is None else int(donors[k]), int(seeds[k]), unit + k // batch_size))
        unit += (n + batch_size - 1) // batch_size
    return plan


def shard_units(n_units: int, shard: tuple[int, int] | None) -> range:
    if shard is None:
        return range(n_units)
    i, n = shard
    return range((i - 1) * n_units // n, i * n_units // n)


# ---- sampling ---------------------------------------------------------------------------------------
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


def composite_lesion(background: np.ndarray, bg_mask: np.ndarray, source: np.ndarray, src_mask: np.ndarray,
                     rot: int, flip: bool, dilate: int) -> tuple[np.ndarray, np.ndarray]:
    """(composite uint8, region bool). The source lesion (turned by `rot` quarter turns, optionally flipped) is
    pasted with its own mask; the rest of the region (the union of both lesions, dilated) is filled with the
    background's skin colour (median outside the region), so neither the background's own lesion nor the source's
    surrounding skin is left for the model to blend around."""
    from scipy import ndimage as ndi

    src, sm = np.rot90(source, rot), np.rot90(src_mask, rot)
    if flip:
        src, sm = src[:, ::-1], sm[:, ::-1]
    region = sm | bg_mask
    if dilate:
        region = ndi.binary_dilation(region, iterations=dilate)
    out = background.copy()
    skin = background[~region] if (~region).any() else background.reshape(-1, 3)
    out[region] = np.median(skin, axis=0).round().astype(np.uint8)
    out[sm] = src[sm]
    return out, region


def blend_alpha(mask: np.ndarray, feather: float) -> np.ndarray:
    """1 deep inside the mask, linear to 0 over `feather` px at its edge, exactly 0 outside."""
    from scipy import ndimage as ndi

    if feather <= 0:
        return mask.astype(np.float32)
    dist = ndi.distance_transform_edt(mask)  # distance to the nearest pixel outside the mask
    return np.clip(dist / feather, 0, 1).astype(np.float32) * mask


def paste_back(background: np.ndarray, generated: np.ndarray, mask: np.ndarray, feather: float) -> np.ndarray:
    a = blend_alpha(mask, feather)[..., None]
    out = a * generated.astype(np.float32) + (1 - a) * background.astype(np.float32)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    out[~mask] = background[~mask]  # exact by construction; stated so no float path can leak
    return out


# ---- outputs ----------------------------------------------------------------------------------------
def save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, optimize=False, compress_level=6)


def write_grid(images: list[np.ndarray], path: Path, cols: int = 8, scale: int = 2) -> None:
    from PIL import Image

    if not images:
        return
    s = images[0].shape[0]
    cols = min(cols, len(images))
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * (s + 2), cols * (s + 2), 3), 255, np.uint8)
    for k, im in enumerate(images):
        y, x = divmod(k, cols)
        sheet[y * (s + 2) + 1: y * (s + 2) + 1 + s, x * (s + 2) + 1: x * (s + 2) + 1 + s] = im
    img = Image.fromarray(sheet)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path, compress_level=6)


def _write_tables(out: Path, rows: list[dict], columns: list[str]) -> None:
    with open(out / GT_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", *ISIC2019_CLASSES])
        for r in rows:
            w.writerow([r["id"], *("1.0" if c == r["class"] else "0.0" for c in ISIC2019_CLASSES)])
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def _write_grids(out: Path, rows: list[dict]) -> list[str]:
    from ..data.isic import decode_file

    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["class"], []).append(r["id"])
    written = []
    for c, ids in by_class.items():
        imgs = [decode_file(str(out / "images" / f"{i}.png")) for i in ids[:GRID_COUNT]]
        write_grid(imgs, out / f"grid_{c}.png")
        written.append(str(out / f"grid_{c}.png"))
    return written


# ---- the entry point ----------------------------------------------------------------------------------
def generate(config, data=None, out=None, **options) -> dict:
    """Run one generation (see the module doc) and write OUT. `config` is a GenerateConfig; for convenience
    `generate(model, data, out, **options)` builds one (unknown options are errors)."""
    if not isinstance(config, GenerateConfig):
        config = GenerateConfig.from_dict({"model": config, "data": data, "out": out, **options})
    elif data is not None or out is not None or options:
        raise ConfigError("generate: pass either a GenerateConfig or (model, data, out, **options), not both")
    with torch_threads(config.threads):
        return _run(config)


@contextmanager
def torch_threads(n: int | None):
    """torch's intra-op thread count set to `n` inside the block and restored after (None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(cfg: GenerateConfig) -> dict:
    import torch
    from scipy import ndimage as ndi

    from ..data import ensure_splits, load_source
    from ..masks import masks_for_records
    from ..progress import Progress
    from .model import load_model, model_hash
    from .runtime import UNetRunner

    shard_t = parse_shard(cfg.shard)
    dev = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    unet, train_sched, meta = load_model(cfg.model, dev)
    mhash = model_hash(cfg.model)
    res = int(meta["resolution"])
    mclasses = list(meta["classes"])
    feather = float(res / 32 * 1.5) if cfg.feather is None else float(cfg.feather)
    mask_dilate = max(1, res // 32) if cfg.mask_dilate is None else int(cfg.mask_dilate)
    harmonizing = cfg.mode == "harmonize"

    ds = ensure_splits(load_source(cfg.data, splits=cfg.splits), seed=0)
    train = ds.split("train")
    counts = {c: n for c, n in train.class_counts().items() if c in mclasses}
    if not any(counts.values()):
        raise DataError(f"{cfg.data}: no training images of the model's classes ({', '.join(mclasses)})")
    targets = class_targets(counts, cfg.classes, cfg.policy, cfg.count, cfg.oversample, cfg.max_synthetic_per_real)
    bg_classes = list(cfg.background_classes or head_classes(counts))
    pool = [r for r in train.records if r.label in bg_classes]
    if not pool:
        raise DataError(f"{cfg.data}: no background images of class(es) {', '.join(bg_classes)}")
    class_pool = {c: [r for r in train.records if r.label == c] for c in targets}
    plan = make_plan(targets, mclasses, len(pool), {c: len(v) for c, v in class_pool.items()}, cfg.seed,
                     cfg.batch_size, cfg.mask_mode, cfg.mode)
    n_units = (max(c.unit for c in plan) + 1) if plan else 0
    units = shard_units(n_units, shard_t)
    runner = UNetRunner(unet, cfg.runtime, cfg.channels_last, cfg.precision, cfg.runtime_cache)
    sizes = Counter(c.unit for c in plan if c.unit in units)
    if sizes:  # the largest unit: torch.compile compiles once for it and pads the others
        runner.warmup(max(sizes.values()) * (2 if cfg.guidance != 1.0 else 1))

    out = Path(cfg.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if cfg.save_inputs:
        (out / "inputs").mkdir(exist_ok=True)
    columns = MANIFEST_COLUMNS + (["background_path", "mask_path"] if cfg.save_inputs else [])
    config = {"model": cfg.model, "model_hash": mhash, "data": cfg.data, "classes": list(targets),
              "targets": targets, "policy": cfg.policy, "count": cfg.count, "oversample": cfg.oversample,
              "mode": cfg.mode, "strength": cfg.strength if harmonizing else None, "sampler": cfg.sampler,
              "steps": cfg.steps, "guidance": cfg.guidance, "seed": cfg.seed, "mask_mode": cfg.mask_mode,
              "masks": cfg.masks, "background_classes": bg_classes,
              "max_synthetic_per_real": cfg.max_synthetic_per_real, "batch_size": cfg.batch_size, "feather": feather,
              "mask_dilate": mask_dilate, "resolution": res, "n_units": n_units,
              "shard": f"{shard_t[0]}/{shard_t[1]}" if shard_t else None,
              # Recorded because outputs agree across runtimes only to float rounding, not byte for byte.
              "runtime": cfg.runtime, "channels_last": cfg.channels_last, "precision": runner.info["precision"]}

    rows: list[dict] = []
    t0 = time.time()
    n_planned = sum(1 for c in plan if c.unit in units)
    bar = Progress(n_planned, f"generate ({cfg.mode})", unit="img") if cfg.progress else None
    for u in units:
        cands = [c for c in plan if c.unit == u]
        bg_recs = [pool[c.background] for c in cands]
        bgs = np.stack([train.image(r, res) for r in bg_recs])
        labels = np.array([mclasses.index(c.cls) for c in cands])
        seeds = [c.seed for c in cands]
        src_recs, src_rms = [None] * len(cands), [None] * len(cands)
        if harmonizing:
            src_recs = [class_pool[c.cls][c.mask_donor] for c in cands]
            srcs = np.stack([train.image(r, res) for r in src_recs])
            bg_mk, _ = masks_for_records(train, bg_recs, res, mask_dir=cfg.masks, images=bgs)
            src_mk, methods = masks_for_records(train, src_recs, res, mask_dir=cfg.masks, images=srcs)
            comps, regions = [], []
            for j, c in enumerate(cands):
                turn = np.random.default_rng([c.seed, 7])  # the source lesion's pose, from the candidate's seed
                comp, region = composite_lesion(bgs[j], bg_mk[j], srcs[j], src_mk[j], int(turn.integers(4)),
                                                bool(turn.random() < 0.5), mask_dilate)
                comps.append(comp)
                regions.append(region)
            comps, mk = np.stack(comps), np.stack(regions)
            gen = harmonize(runner, train_sched, comps, mk, labels, seeds, meta["null_class"], cfg.strength,
                            cfg.sampler, cfg.steps, cfg.guidance, dev)
        else:
            if cfg.mask_mode == "own":
                mrecs, mimgs = bg_recs, bgs
            else:
                mrecs = [class_pool[c.cls][c.mask_donor] for c in cands]
                mimgs = np.stack([train.image(r, res) for r in mrecs])
            mk, methods = masks_for_records(train, mrecs, res, mask_dir=cfg.masks, images=mimgs)
            if mask_dilate:
                mk = np.stack([ndi.binary_dilation(m, iterations=mask_dilate) for m in mk])
            gen = inpaint(runner, train_sched, bgs, mk, labels, seeds, meta["null_class"], cfg.sampler, cfg.steps,
                          cfg.guidance, dev)
        for j, c in enumerate(cands):
            img = paste_back(bgs[j], gen[j], mk[j], feather)
            if harmonizing:
                # How far the result moved from the pasted real lesion, inside the region (0 = a copy).
                diff = (img[mk[j]].astype(np.float32) - comps[j][mk[j]].astype(np.float32)) / 255.0
                src_rms[j] = float(np.sqrt((diff ** 2).mean())) if diff.size else 0.0
            save_png(img, out / "images" / f"{c.id}.png")
            if harmonizing:
                mask_source = f"source:{src_recs[j].image_id}"
            else:
                mask_source = "own" if cfg.mask_mode == "own" else f"class:{mrecs[j].image_id}"
            row = {"id": c.id, "class": c.cls, "background_id": bg_recs[j].image_id,
                   "background_class": bg_recs[j].label, "mask_source": mask_source,
                   "mask_method": methods[j], "mask_coverage": f"{mk[j].mean():.4f}", "seed": c.seed,
                   "sampler": cfg.sampler, "steps": cfg.steps, "guidance": cfg.guidance, "model_hash": mhash,
                   "index": c.index, "mode": cfg.mode, "strength": cfg.strength if harmonizing else "",
                   "source_id": src_recs[j].image_id if harmonizing else "",
                   "source_rms": f"{src_rms[j]:.5f}" if harmonizing else ""}
            if cfg.save_inputs:
                bp, mp = f"inputs/{c.id}_background.png", f"inputs/{c.id}_mask.png"
                save_png(bgs[j], out / bp)
                save_png((mk[j] * 255).astype(np.uint8), out / mp)
                row.update(background_path=bp, mask_path=mp)
                if harmonizing:
                    save_png(comps[j], out / f"inputs/{c.id}_composite.png")
            rows.append(row)
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()
    wall = time.time() - t0
    _write_tables(out, rows, columns)
    (out / "generation.json").write_text(json.dumps(config, indent=2) + "\n")
    grids = _write_grids(out, rows)
    return {"out": str(out), "n": len(rows), "per_class": {c: sum(r["class"] == c for r in rows) for c in targets},
            "targets": targets, "units": [units.start, units.stop], "n_units": n_units, "wall_s": round(wall, 2),
            "images_per_s": round(len(rows) / wall, 3) if wall > 0 and rows else None, "grids": grids,
            "model_hash": mhash, "mode": cfg.mode, "runtime": runner.info}


def merge_shards(dirs, out) -> dict:
    """Merge shard folders of one plan into OUT; the result equals one unsharded run with the same settings."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ConfigError("merge-shards: no shard folders given")
    configs, manifests = [], []
    for d in dirs:
        gj = d / "generation.json"
        if not gj.is_file():
            raise DataError(f"{d}: not a generation output (generation.json missing)")
        configs.append(json.loads(gj.read_text()))
        with open(d / "manifest.csv", newline="") as f:
            rd = csv.DictReader(f)
            manifests.append((rd.fieldnames, list(rd)))
    base = {k: v for k, v in configs[0].items() if k != "shard"}
    for d, c in zip(dirs, configs):
        diff = sorted(k for k in set(base) | set(c) if k != "shard" and base.get(k) != c.get(k))
        if diff:
            raise DataError(f"{d}: generation settings differ from {dirs[0]} in {', '.join(diff)}")
    shards = [c.get("shard") for c in configs]
    ns = {int(s.split("/")[1]) for s in shards if s}
    if None in shards or len(ns) != 1 or sorted(int(s.split("/")[0]) for s in shards) != list(range(1, ns.pop() + 1)):
        raise DataError(f"merge-shards: need exactly shards 1..N of one plan, got {shards}")
    columns = manifests[0][0]
    rows = sorted((r for _, rs in manifests for r in rs), key=lambda r: int(r["index"]))
    idx = [int(r["index"]) for r in rows]
    if len(set(idx)) != len(idx):
        raise DataError("merge-shards: shards overlap (duplicate candidate index)")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    has_inputs = "background_path" in columns
    if has_inputs:
        (out / "inputs").mkdir(exist_ok=True)
    src_of = {}
    for d, (_, rs) in zip(dirs, manifests):
        for r in rs:
            src_of[r["id"]] = d
    for r in rows:
        d = src_of[r["id"]]
        shutil.copyfile(d / "images" / f"{r['id']}.png", out / "images" / f"{r['id']}.png")
        if has_inputs:
            for k in ("background_path", "mask_path"):
                shutil.copyfile(d / r[k], out / r[k])
    _write_tables(out, rows, columns)
    merged = dict(configs[0])
    merged["shard"] = None
    (out / "generation.json").write_text(json.dumps(merged, indent=2) + "\n")
    grids = _write_grids(out, rows)
    return {"out": str(out), "n": len(rows), "shards": len(dirs), "grids": grids}
