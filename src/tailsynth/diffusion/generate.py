"""Tail-class synthesis, the entry point: settings -> plan of candidates -> batched inpainting or
harmonization -> paste-back -> provenance. The parts live in their own modules, the way diffusers keeps
pipelines apart from schedulers: `plan` (policy and per-candidate plan), `sampling` (the denoising loop),
`composite` (source-lesion composites and paste-back), `candidate_set` (the output folder: manifest, record, ground truth, grids, the merge), `outputs` (PNGs) and
`shards` (shard ranges and the merge). This module runs them in order and re-exports their public names, so `tailsynth.diffusion.generate`
stays the one import for callers.

Two modes:
- `inpaint`: the background's lesion region is blanked and the model paints a lesion of the target class into it
  from pure noise (the model must invent the lesion);
- `harmonize`: a real lesion of the target class (with its own mask, randomly flipped/rotated) is pasted onto the
  head-class background, the composite is noised to `strength` (0 = untouched, 1 = pure noise) and denoised
  with the target label, SDEdit-style (Meng et al. 2022): the model only blends and varies a real lesion, the
  generative cousin of CMO's copy-paste (Park et al. 2022). The manifest records the source lesion and how far
  the result moved from it (`source_rms`), so selection can drop near-copies of the source.

Determinism and sharding: see `plan`. Paste-back (background bytes exact outside the mask): see `composite`.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.errors import DataError
from ..errors import ConfigError
from .candidate_set import (
    GRID_COUNT,
    GT_FILE,
    IMAGES_DIR,
    INPUT_COLUMNS,
    INPUTS_DIR,
    MANIFEST_COLUMNS,
    write_candidate_set,
    write_grids,
)
from .composite import blend_alpha, composite_lesion, paste_back
from .outputs import save_png, write_grid
from .plan import POLICIES, Candidate, class_targets, head_classes, make_plan
from .runtime import check_runtime
from .sampling import SAMPLERS, harmonize, inpaint, make_scheduler
from .shards import merge_shards, parse_shard, shard_units

__all__ = [
    "GRID_COUNT", "GT_FILE", "MANIFEST_COLUMNS", "MASK_MODES", "MODES", "POLICIES", "SAMPLERS",
    "Candidate", "GenerateConfig", "blend_alpha", "class_targets", "composite_lesion", "generate", "harmonize",
    "head_classes", "inpaint", "make_plan", "make_scheduler", "merge_shards", "parse_shard", "paste_back",
    "save_png", "shard_units", "torch_threads", "write_grid",
]

MASK_MODES = ("own", "class")
MODES = ("inpaint", "harmonize")


@dataclass
class GenerateConfig:
    """Every setting of one generation run (written to the candidate set's record, minus run-local fields)."""

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
    # bf16 natively, fp32 elsewhere (what ran is recorded in the candidate set's record).
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


@dataclass
class _Session:
    """One generation run from setup to the last unit: the model, the data pools, the plan and this shard's
    units."""

    cfg: GenerateConfig
    device: object
    runner: object  # runtime.UNetRunner
    train_sched: object  # the model's DDPM training scheduler (samplers are built from its config)
    meta: dict
    mhash: str
    res: int
    classes: list[str]  # the model's classes
    feather: float
    mask_dilate: int
    train: object  # the data's train split
    targets: dict[str, int]
    bg_classes: list[str]
    pool: list  # background records
    class_pool: dict  # class -> records of that class (mask donors, harmonize sources)
    plan: list[Candidate]
    n_units: int
    units: range
    shard: tuple[int, int] | None
    out: Path

    @property
    def harmonizing(self) -> bool:
        return self.cfg.mode == "harmonize"


@dataclass
class _Unit:
    """One sampling unit's inputs and what the manifest says of them."""

    cands: list[Candidate]
    bg_recs: list
    bgs: np.ndarray  # uint8 N,R,R,3 backgrounds
    masks: np.ndarray  # bool N,R,R: the region the model paints and paste-back blends
    methods: list[str]  # how each mask was made
    mask_sources: list[str]
    src_recs: list  # harmonize: the pasted source lesions' records; inpaint: None each
    comps: np.ndarray | None = None  # harmonize: the composites the model starts from


def _pools(cfg: GenerateConfig, classes: list[str]):
    """(train split, per-class targets, background classes, background pool, per-class pools)."""
    from ..data import ensure_splits, load_source

    ds = ensure_splits(load_source(cfg.data, splits=cfg.splits), seed=0)
    train = ds.split("train")
    counts = {c: n for c, n in train.class_counts().items() if c in classes}
    if not any(counts.values()):
        raise DataError(f"{cfg.data}: no training images of the model's classes ({', '.join(classes)})")
    targets = class_targets(counts, cfg.classes, cfg.policy, cfg.count, cfg.oversample, cfg.max_synthetic_per_real)
    bg_classes = list(cfg.background_classes or head_classes(counts))
    pool = [r for r in train.records if r.label in bg_classes]
    if not pool:
        raise DataError(f"{cfg.data}: no background images of class(es) {', '.join(bg_classes)}")
    class_pool = {c: [r for r in train.records if r.label == c] for c in targets}
    return train, targets, bg_classes, pool, class_pool


def _open_session(cfg: GenerateConfig) -> _Session:
    """Load the model and the data, make the plan, pick this shard's units and warm the UNet runner up."""
    import torch

    from .model import load_model, model_hash
    from .runtime import UNetRunner

    shard = parse_shard(cfg.shard)
    dev = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    unet, train_sched, meta = load_model(cfg.model, dev)
    mhash = model_hash(cfg.model)
    res = int(meta["resolution"])
    classes = list(meta["classes"])
    feather = float(res / 32 * 1.5) if cfg.feather is None else float(cfg.feather)
    mask_dilate = max(1, res // 32) if cfg.mask_dilate is None else int(cfg.mask_dilate)
    train, targets, bg_classes, pool, class_pool = _pools(cfg, classes)
    plan = make_plan(targets, classes, len(pool), {c: len(v) for c, v in class_pool.items()}, cfg.seed,
                     cfg.batch_size, cfg.mask_mode, cfg.mode)
    n_units = (max(c.unit for c in plan) + 1) if plan else 0
    units = shard_units(n_units, shard)
    runner = UNetRunner(unet, cfg.runtime, cfg.channels_last, cfg.precision, cfg.runtime_cache)
    sizes = Counter(c.unit for c in plan if c.unit in units)
    if sizes:  # the largest unit: torch.compile compiles once for it and pads the others
        runner.warmup(max(sizes.values()) * (2 if cfg.guidance != 1.0 else 1))
    return _Session(cfg, dev, runner, train_sched, meta, mhash, res, classes, feather, mask_dilate, train,
                    targets, bg_classes, pool, class_pool, plan, n_units, units, shard, Path(cfg.out))


def _settings(s: _Session) -> dict:
    """The candidate set's record: the settings as resolved for this run (merge_shards compares them across shards)."""
    cfg = s.cfg
    return {"model": cfg.model, "model_hash": s.mhash, "data": cfg.data, "classes": list(s.targets),
            "targets": s.targets, "policy": cfg.policy, "count": cfg.count, "oversample": cfg.oversample,
            "mode": cfg.mode, "strength": cfg.strength if s.harmonizing else None, "sampler": cfg.sampler,
            "steps": cfg.steps, "guidance": cfg.guidance, "seed": cfg.seed, "mask_mode": cfg.mask_mode,
            "masks": cfg.masks, "background_classes": s.bg_classes,
            "max_synthetic_per_real": cfg.max_synthetic_per_real, "batch_size": cfg.batch_size,
            "feather": s.feather, "mask_dilate": s.mask_dilate, "resolution": s.res, "n_units": s.n_units,
            "shard": f"{s.shard[0]}/{s.shard[1]}" if s.shard else None,
            # Recorded because outputs agree across runtimes only to float rounding, not byte for byte.
            "runtime": cfg.runtime, "channels_last": cfg.channels_last,
            "precision": s.runner.info["precision"]}


def _harmonize_unit(s: _Session, cands, bg_recs, bgs) -> _Unit:
    """Paste each candidate's source lesion onto its background (pose from the candidate's seed)."""
    from ..masks import masks_for_records

    src_recs = [s.class_pool[c.cls][c.mask_donor] for c in cands]
    srcs = np.stack([s.train.image(r, s.res) for r in src_recs])
    bg_mk, _ = masks_for_records(s.train, bg_recs, s.res, mask_dir=s.cfg.masks, images=bgs)
    src_mk, methods = masks_for_records(s.train, src_recs, s.res, mask_dir=s.cfg.masks, images=srcs)
    comps, regions = [], []
    for j, c in enumerate(cands):
        turn = np.random.default_rng([c.seed, 7])  # the source lesion's pose, from the candidate's seed
        comp, region = composite_lesion(bgs[j], bg_mk[j], srcs[j], src_mk[j], int(turn.integers(4)),
                                        bool(turn.random() < 0.5), s.mask_dilate)
        comps.append(comp)
        regions.append(region)
    return _Unit(cands, bg_recs, bgs, np.stack(regions), methods, [f"source:{r.image_id}" for r in src_recs],
                 src_recs, np.stack(comps))


def _inpaint_unit(s: _Session, cands, bg_recs, bgs) -> _Unit:
    """The region to paint: the background's own lesion mask or a donor's of the target class, dilated."""
    from scipy import ndimage as ndi

    from ..masks import masks_for_records

    if s.cfg.mask_mode == "own":
        mrecs, mimgs = bg_recs, bgs
    else:
        mrecs = [s.class_pool[c.cls][c.mask_donor] for c in cands]
        mimgs = np.stack([s.train.image(r, s.res) for r in mrecs])
    mk, methods = masks_for_records(s.train, mrecs, s.res, mask_dir=s.cfg.masks, images=mimgs)
    if s.mask_dilate:
        mk = np.stack([ndi.binary_dilation(m, iterations=s.mask_dilate) for m in mk])
    sources = ["own"] * len(cands) if s.cfg.mask_mode == "own" else [f"class:{r.image_id}" for r in mrecs]
    return _Unit(cands, bg_recs, bgs, mk, methods, sources, [None] * len(cands))


def _prepare_unit(s: _Session, u: int) -> _Unit:
    cands = [c for c in s.plan if c.unit == u]
    bg_recs = [s.pool[c.background] for c in cands]
    bgs = np.stack([s.train.image(r, s.res) for r in bg_recs])
    return (_harmonize_unit if s.harmonizing else _inpaint_unit)(s, cands, bg_recs, bgs)


def _sample(s: _Session, b: _Unit) -> np.ndarray:
    """The model's raw output for the unit (uint8 N,R,R,3), before paste-back."""
    cfg = s.cfg
    labels = np.array([s.classes.index(c.cls) for c in b.cands])
    seeds = [c.seed for c in b.cands]
    if s.harmonizing:
        return harmonize(s.runner, s.train_sched, b.comps, b.masks, labels, seeds, s.meta["null_class"],
                         cfg.strength, cfg.sampler, cfg.steps, cfg.guidance, s.device)
    return inpaint(s.runner, s.train_sched, b.bgs, b.masks, labels, seeds, s.meta["null_class"], cfg.sampler,
                   cfg.steps, cfg.guidance, s.device)


def _write_candidate(s: _Session, b: _Unit, j: int, generated: np.ndarray) -> dict:
    """Paste candidate J back, write its PNG (and inputs with save_inputs); returns its manifest row."""
    cfg, c, mk = s.cfg, b.cands[j], b.masks[j]
    img = paste_back(b.bgs[j], generated, mk, s.feather)
    src_rms = None
    if s.harmonizing:
        # How far the result moved from the pasted real lesion, inside the region (0 = a copy).
        diff = (img[mk].astype(np.float32) - b.comps[j][mk].astype(np.float32)) / 255.0
        src_rms = float(np.sqrt((diff ** 2).mean())) if diff.size else 0.0
    save_png(img, s.out / IMAGES_DIR / f"{c.id}.png")
    row = {"id": c.id, "class": c.cls, "background_id": b.bg_recs[j].image_id,
           "background_class": b.bg_recs[j].label, "mask_source": b.mask_sources[j],
           "mask_method": b.methods[j], "mask_coverage": f"{mk.mean():.4f}", "seed": c.seed,
           "sampler": cfg.sampler, "steps": cfg.steps, "guidance": cfg.guidance, "model_hash": s.mhash,
           "index": c.index, "mode": cfg.mode, "strength": cfg.strength if s.harmonizing else "",
           "source_id": b.src_recs[j].image_id if s.harmonizing else "",
           "source_rms": f"{src_rms:.5f}" if s.harmonizing else ""}
    if cfg.save_inputs:
        bp, mp = f"{INPUTS_DIR}/{c.id}_background.png", f"{INPUTS_DIR}/{c.id}_mask.png"
        save_png(b.bgs[j], s.out / bp)
        save_png((mk * 255).astype(np.uint8), s.out / mp)
        row.update(background_path=bp, mask_path=mp)
        if s.harmonizing:
            save_png(b.comps[j], s.out / INPUTS_DIR / f"{c.id}_composite.png")
    return row


def _run(cfg: GenerateConfig) -> dict:
    from ..progress import Progress

    s = _open_session(cfg)
    (s.out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    if cfg.save_inputs:
        (s.out / INPUTS_DIR).mkdir(exist_ok=True)
    columns = MANIFEST_COLUMNS + (INPUT_COLUMNS if cfg.save_inputs else [])
    settings = _settings(s)

    rows: list[dict] = []
    t0 = time.time()
    n_planned = sum(1 for c in s.plan if c.unit in s.units)
    bar = Progress(n_planned, f"generate ({cfg.mode})", unit="img") if cfg.progress else None
    for u in s.units:
        b = _prepare_unit(s, u)
        generated = _sample(s, b)
        rows.extend(_write_candidate(s, b, j, generated[j]) for j in range(len(b.cands)))
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()
    wall = time.time() - t0
    grids = write_grids(write_candidate_set(s.out, rows, columns, settings), rows)
    per_class = {c: sum(r["class"] == c for r in rows) for c in s.targets}
    return {"out": str(s.out), "n": len(rows), "per_class": per_class, "targets": s.targets,
            "units": [s.units.start, s.units.stop], "n_units": s.n_units, "wall_s": round(wall, 2),
            "images_per_s": round(len(rows) / wall, 3) if wall > 0 and rows else None,
            "grids": grids, "model_hash": s.mhash, "mode": cfg.mode, "runtime": s.runner.info}
