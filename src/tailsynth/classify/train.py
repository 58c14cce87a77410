"""Train a timm classifier on the train split, select on validation balanced accuracy, write a model folder.

The whole split is decoded once into a uint8 tensor; batches are augmented as tensors. There is no DataLoader:
on a 2-core machine worker processes cost more than they save for 28-64 px images.

Outputs in OUT: a trained classifier model folder (`tailsynth.classify.folders` names its files): the selected
epoch's weights (tailsynth.classify.model format), the val split's metrics (+ per-class CSV, markdown, plots), the
resolved config, the last epoch's checkpoint (for resume) and the history (per-epoch loss and val metrics).
"""

from __future__ import annotations

import csv
import functools
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..hashing import data_revision
from .augment import AugmentConfig
from .folders import CONFIG_FILE, TrainedClassifier
from .losses import LOSSES
from .samplers import CLASS_SAMPLERS


@dataclass
class ClassifierTrainConfig:
    backbone: str = "resnet18"
    loss: str = "ce"
    sampler: str = "none"
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    drop_rate: float = 0.0
    resolution: int | None = None
    seed: int = 0
    # Sources without train/val get a lesion-grouped split from this seed, kept apart from the training seed so
    # that runs over several seeds are compared on one split.
    split_seed: int = 0
    augment: dict = field(default_factory=dict)
    loss_kw: dict = field(default_factory=dict)
    pretrained_path: str | None = None
    # "imagenet": the backbone's ImageNet weights from a package that ships them (classify.pretrained); the model
    # then uses the normalization those weights were trained with instead of the training images' statistics.
    pretrained: str | None = None
    synthetic_manifest: str | None = None
    synthetic_ratio: float | None = None  # share of each class's draws that are synthetic (samplers.EpochPlan)
    synthetic_weight: float = 1.0  # loss weight of every synthetic image (times its manifest weight)
    # replace | add | replay: synthetic draws displace real ones, come on top of a real-only epoch, or (the
    # control of add) are replaced by more real draws of the class (samplers.EpochPlan).
    synthetic_dose: str = "replace"
    cmo: dict = field(default_factory=dict)  # CMO lesion pasting (augment.CMOConfig); empty: off
    # mixup (Zhang et al. 2018): each batch is mixed with a shuffled copy of itself, lam ~ Beta(a, a); 0 = off.
    mixup_alpha: float = 0.0
    # Classifier re-training (Kang et al. 2020, cRT): after training, the last layer is re-fitted for this many
    # epochs on class-balanced draws of the real training images' features, the backbone frozen; 0 = off.
    crt_epochs: int = 0
    select_metric: str = "balanced_accuracy"
    # auto | fp32 | bf16 (autocast) for training, validation and the model's later inference (classify.precision):
    # auto measures which is faster for this backbone on this machine, and uses bf16 only on CPUs with native bf16.
    # None: fp32 on CPU, bf16 on CUDA (the defaults before this option existed).
    precision: str | None = None
    amp: bool = True  # CUDA: bf16 autocast unless precision is fp32 or this is off
    channels_last: bool | None = None  # None: decided with the precision (auto: measured; CUDA: on)
    threads: int | None = None
    device: str | None = None


def read_synthetic_manifest(path: str | Path, classes: list[str], resolution: int):
    """CSV `path,class[,weight]` -> (uint8 N x S x S x 3, class indices, weights). Paths may be relative to the CSV."""
    from PIL import Image

    from ..data.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: synthetic manifest not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for col in ("path", "class"):
            if col not in cols:
                raise DataError(f"{path}: missing column {col!r} (expected path,class[,weight]; found {cols})")
        rows = list(reader)
    idx = {c: i for i, c in enumerate(classes)}
    images = np.empty((len(rows), resolution, resolution, 3), np.uint8)
    labels = np.empty(len(rows), np.int64)
    weights = np.ones(len(rows), np.float32)
    for i, row in enumerate(rows):
        line = i + 2
        cls = (row.get("class") or "").strip()
        if cls not in idx:
            raise DataError(f"{path}: row {line}: class {cls!r} is not one of the real data's classes {classes}")
        labels[i] = idx[cls]
        if "weight" in cols and (row.get("weight") or "").strip() != "":
            try:
                weights[i] = float(row["weight"])
            except ValueError:
                raise DataError(f"{path}: row {line}: weight {row['weight']!r} is not a number") from None
            if not (weights[i] >= 0 and math.isfinite(weights[i])):
                raise DataError(f"{path}: row {line}: weight must be a finite number >= 0, got {row['weight']}")
        img_path = Path(row["path"])
        if not img_path.is_absolute():
            img_path = path.parent / img_path
        try:
            with Image.open(img_path) as im:
                im = im.convert("RGB")
                if im.size != (resolution, resolution):
                    im = im.resize((resolution, resolution), Image.BILINEAR)
                images[i] = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: row {line}: cannot read image {img_path} ({e})") from None
    return images, labels, weights


def prepare_data(data, splits=None, seed: int = 0, resolution: int | None = None):
    """(dataset with train/val splits, resolution)."""
    from ..data import ensure_splits, load_source
    from ..data.errors import DataError

    ds = ensure_splits(load_source(data, splits=splits), seed=seed)
    for s in ("train", "val"):
        if not any(r.split == s for r in ds.records):
            raise DataError(f"{data}: no '{s}' split (pass a split manifest with --splits)")
    res = int(resolution or ds.native_size or 64)
    return ds, res


def _set_seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_float(xb_uint8, device):
    """uint8 N x 3 x H x W -> float 0..1 on device."""
    return xb_uint8.to(device, non_blocking=True).float().div_(255.0)


def predict_logits(model, x_uint8_nchw, mean, std, device, batch_size: int = 512, channels_last: bool = False,
                   amp_dtype=None):
    """Logits for a uint8 N x 3 x H x W tensor (eval mode)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x_uint8_nchw), batch_size):
            x = (_to_float(x_uint8_nchw[i : i + batch_size], device) - mean) / std
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def mixup(x, y, alpha: float, gen):
    """(mixed images, shuffled labels, lam): x mixed with a permutation of itself, lam ~ Beta(alpha, alpha) drawn
    from the trainer's generator (so a resumed run repeats the same mixes)."""
    import torch

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=gen)
    return lam * x + (1.0 - lam) * x[perm], y[perm], torch.full((len(x),), lam)


def epoch_batches(X, Y, W, idx, batch_size: int, aug_cfg, gen, mean, std, device, channels_last: bool = False,
                  cmo=None, n_real: int | None = None, mixup_alpha: float = 0.0):
    """(normalised images, labels, per-sample weights or None, label mix) for each batch of IDX, augmented on the
    CPU. CMO (a per-batch hook, `augment.build_cmo`) pastes real tail lesions onto real images and gives the
    mix (pasted labels, area weights) the loss takes; without it the mix is (). A trailing batch of one image is
    dropped: BatchNorm cannot train on it."""
    import torch

    from .augment import augment_batch

    for b in range(0, len(idx), batch_size):
        bi = idx[b : b + batch_size]
        if len(bi) < 2:
            continue
        xb, mix = _to_float(X[bi], torch.device("cpu")), ()
        if cmo is not None:
            xb, y_b, lam = cmo(xb, Y[bi], bi < n_real, gen)
            mix = (y_b.to(device), lam.to(device))
        x = augment_batch(xb, aug_cfg, gen)
        if mixup_alpha > 0 and not mix:
            x, y_b, lam = mixup(x, Y[bi], mixup_alpha, gen)
            mix = (y_b.to(device), lam.to(device))
        x = (x.to(device) - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        w = W[bi].to(device)
        yield x, Y[bi].to(device), (None if bool((w == 1).all()) else w), mix


def train_one_epoch(model, batches, criterion, optimizer, scheduler, device, amp_dtype=None, epoch: int = 0,
                    on_step=None) -> dict:
    """One pass over BATCHES (see `epoch_batches`): forward, loss, backward, optimizer and per-step LR step.
    `on_step(step, loss)` is called after each step (progress). Returns the mean loss and the first step's loss."""
    import torch

    model.train()
    criterion.set_epoch(epoch)
    losses = []
    for step, (x, y, sw, mix) in enumerate(batches):
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        loss_v = criterion(logits.float(), y, sw, *mix)
        if not torch.isfinite(loss_v):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss_v.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss_v.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    return {"loss": float(np.mean(losses)), "first_step_loss": losses[0] if losses else None}


def validate(model, X, y, classes, mean, std, device, channels_last: bool = False, amp_dtype=None) -> dict:
    """Classification metrics of MODEL on uint8 N x 3 x H x W images X with labels Y."""
    import torch

    from ..metrics import classification_metrics

    logits = predict_logits(model, X, mean, std, device, channels_last=channels_last, amp_dtype=amp_dtype)
    return classification_metrics(y, torch.softmax(logits, 1).numpy(), classes)


@dataclass
class _TrainSet:
    """The splits decoded once (real training images first, then synthetic ones) and what is derived from them
    before the model exists: the epoch plan, the CMO hook and the normalisation the model is saved with."""

    classes: list[str]
    res: int
    xtr: np.ndarray
    ytr: np.ndarray
    wtr: np.ndarray
    n_real: int
    xva: np.ndarray
    yva: np.ndarray
    plan: object  # samplers.EpochPlan
    cmo: object | None  # augment.build_cmo's per-batch hook
    source: object | None  # pretrained.source_for's weights source
    mean: np.ndarray
    std: np.ndarray


@dataclass
class _Tensors:
    """The training and val images as uint8 N x 3 x H x W tensors, and the normalisation on the device."""

    Xtr: object
    Ytr: object
    Wtr: object
    Xva: object
    mean: object
    std: object


@dataclass
class _Fit:
    """The model and everything a checkpoint saves and a resume restores."""

    model: object
    criterion: object
    opt: object
    sched: object
    gen: object
    steps_per_epoch: int
    counts: object  # the loss's per-class counts (EpochPlan.class_counts)
    start_epoch: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": -1.0, "epoch": -1, "state": None})


@dataclass
class _Run:
    """One call of train_classifier: the state handed from step to step."""

    cfg: ClassifierTrainConfig
    aug: AugmentConfig
    out: Path
    log: object
    device: object
    data: _TrainSet
    train_prec: object  # precision.Choice
    infer_prec: object
    t: _Tensors
    fit: _Fit
    resolved: dict


# Config fields a resumed checkpoint must agree on: any other difference would silently change the run.
_RESUME_KEYS = ("backbone", "loss", "sampler", "epochs", "batch_size", "lr", "seed", "resolution", "optimizer",
                "pretrained")


def _make_config(kw: dict, epochs: int | None, **given) -> tuple[ClassifierTrainConfig, AugmentConfig]:
    """The validated config (and augmentation config) from train_classifier's arguments; errors before any work."""
    from ..training import OPTIMIZERS

    unknown = set(kw) - set(ClassifierTrainConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"train_classifier: unknown option(s) {sorted(unknown)}")
    cfg = ClassifierTrainConfig(**given, **kw)
    if epochs is not None:
        cfg.epochs = int(epochs)
    if cfg.loss not in LOSSES:
        raise ConfigError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
    if cfg.sampler not in CLASS_SAMPLERS:
        raise ConfigError(f"unknown sampler {cfg.sampler!r}; choose one of {', '.join(CLASS_SAMPLERS)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose {' or '.join(OPTIMIZERS)}")
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {cfg.epochs}")
    if not (cfg.mixup_alpha >= 0 and math.isfinite(cfg.mixup_alpha)):
        raise ConfigError(f"mixup_alpha must be a finite number >= 0, got {cfg.mixup_alpha}")
    if cfg.crt_epochs < 0:
        raise ConfigError(f"crt_epochs must be >= 0, got {cfg.crt_epochs}")
    aug_cfg = AugmentConfig.from_dict(cfg.augment)
    if not (cfg.synthetic_weight >= 0 and math.isfinite(cfg.synthetic_weight)):
        raise ConfigError(f"synthetic_weight must be a finite number >= 0, got {cfg.synthetic_weight}")
    return cfg, aug_cfg


def _load_train_set(data, splits, cfg: ClassifierTrainConfig) -> _TrainSet:
    """Decode the splits (+ the synthetic manifest) and derive the epoch plan, CMO and normalisation."""
    from ..data.errors import DataError
    from .augment import build_cmo
    from .samplers import EpochPlan

    ds, res = prepare_data(data, splits=splits, seed=cfg.split_seed, resolution=cfg.resolution)
    cfg.resolution = res
    classes = list(ds.classes)
    xtr, ytr = ds.split("train").arrays(res)
    xva, yva = ds.split("val").arrays(res)
    wtr = np.ones(len(ytr), np.float32)
    n_real = len(ytr)
    if cfg.synthetic_manifest:
        xs, ys, ws = read_synthetic_manifest(cfg.synthetic_manifest, classes, res)
        ws = ws * np.float32(cfg.synthetic_weight)
        xtr, ytr, wtr = np.concatenate([xtr, xs]), np.concatenate([ytr, ys]), np.concatenate([wtr, ws])
    elif cfg.synthetic_ratio is not None:
        raise ConfigError("synthetic_ratio needs a synthetic_manifest")
    if n_real == 0:
        raise DataError(f"{data}: the train split is empty")
    plan = EpochPlan(ytr[:n_real], ytr[n_real:], len(classes), cfg.sampler, cfg.synthetic_ratio, cfg.synthetic_dose)
    # CMO pastes real tail lesions onto real head-class images of each batch (a per-batch transform hook).
    cmo = build_cmo(cfg.cmo, ds.split("train"), xtr[:n_real], ytr[:n_real], classes)
    source = None
    if cfg.pretrained:
        from .pretrained import source_for

        source = source_for(cfg.backbone, cfg.pretrained)
        # The weights expect the normalization they were trained with; it is stored with the model.
        mean_np, std_np = np.array(source.mean, np.float64), np.array(source.std, np.float64)
    else:
        # Normalisation statistics of the real training images, stored with the model.
        real = xtr[:n_real].reshape(-1, 3).astype(np.float64) / 255.0
        mean_np, std_np = real.mean(0), real.std(0) + 1e-6
        del real
    return _TrainSet(classes, res, xtr, ytr, wtr, n_real, xva, yva, plan, cmo, source, mean_np, std_np)


def _resolve_precisions(cfg: ClassifierTrainConfig, res: int, device, log):
    """(training, inference) precision.Choice for this backbone, resolution and device."""
    from .precision import INFER_BATCH, resolve

    prec_kw = {"backbone": cfg.backbone, "resolution": res, "device": device.type, "log": log}
    if device.type == "cuda" and not cfg.amp:
        cfg.precision = "fp32"
    train_prec = resolve(cfg.precision, cfg.channels_last, batch_size=cfg.batch_size, purpose="train", **prec_kw)
    infer_prec = resolve(cfg.precision, cfg.channels_last, batch_size=INFER_BATCH, purpose="infer", **prec_kw)
    return train_prec, infer_prec


def _to_tensors(d: _TrainSet, device) -> _Tensors:
    import torch

    return _Tensors(Xtr=torch.from_numpy(d.xtr).permute(0, 3, 1, 2).contiguous(),
                    Ytr=torch.from_numpy(d.ytr), Wtr=torch.from_numpy(d.wtr),
                    Xva=torch.from_numpy(d.xva).permute(0, 3, 1, 2).contiguous(),
                    mean=torch.tensor(d.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                    std=torch.tensor(d.std, dtype=torch.float32, device=device).view(1, 3, 1, 1))


def _build_fit(cfg: ClassifierTrainConfig, d: _TrainSet, device, channels_last: bool) -> _Fit:
    """Model, loss, optimiser, LR schedule and the batch generator, seeded from cfg.seed."""
    import torch

    from ..training import create_optimizer, create_scheduler
    from .losses import build_loss
    from .model import build_backbone

    _set_seed(cfg.seed)
    model = build_backbone(cfg.backbone, len(d.classes), pretrained_path=cfg.pretrained_path,
                           pretrained=cfg.pretrained, drop_rate=cfg.drop_rate).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    counts = d.plan.class_counts()
    criterion = build_loss(cfg.loss, counts, epochs=cfg.epochs, **cfg.loss_kw).to(device)
    opt = create_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, momentum=cfg.momentum)
    # A trailing batch of one image is dropped (see epoch_batches).
    n = len(d.plan)
    steps_per_epoch = max(1, n // cfg.batch_size + (1 if n % cfg.batch_size >= 2 else 0))
    sched = create_scheduler(opt, steps_per_epoch * cfg.epochs, round(cfg.warmup_epochs * steps_per_epoch),
                             cfg.min_lr_ratio)
    gen = torch.Generator().manual_seed(cfg.seed)
    return _Fit(model, criterion, opt, sched, gen, steps_per_epoch, counts)


def _resolved_config(cfg: ClassifierTrainConfig, aug_cfg: AugmentConfig, d: _TrainSet, fit: _Fit, data, splits,
                     device, train_prec, infer_prec) -> dict:
    """What CONFIG_FILE (and the saved model) record: every setting as it was resolved for this run."""
    import torch

    amp_dtype = train_prec.autocast_dtype
    return {
        **{k: getattr(cfg, k) for k in ClassifierTrainConfig.__dataclass_fields__},
        "augment": aug_cfg.to_dict(),
        "data": str(data),
        "splits": str(splits) if splits else None,
        "classes": d.classes,
        "loss_class_counts": {c: float(n) for c, n in zip(d.classes, fit.counts)},
        "n_train_real": int(d.n_real),
        "n_train_synthetic": int(len(d.ytr) - d.n_real),
        "synthetic_draws_per_epoch": d.plan.n_syn_draws,
        "cmo": d.cmo.cfg.to_dict() if d.cmo is not None else None,
        "n_val": len(d.yva),
        "steps_per_epoch": fit.steps_per_epoch,
        "mean": [float(v) for v in d.mean],
        "std": [float(v) for v in d.std],
        "device": str(device),
        "channels_last": train_prec.channels_last,
        "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "precision_train": train_prec.to_dict(),
        "precision_infer": infer_prec.to_dict(),
        "pretrained_source": d.source.describe() if d.source else None,
        "torch": str(torch.__version__),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def _resume(run: _Run, saver, resume: bool) -> None:
    """Restore the fit from the checkpoint (resume=True and one exists); refuse one of another configuration."""
    import torch

    ck = saver.load() if resume else None
    if ck is None:
        if resume:
            run.log(f"no checkpoint at {saver.path}: starting from scratch")
        return
    for k in _RESUME_KEYS:
        if ck["config"].get(k) != run.resolved.get(k):
            raise ConfigError(f"{saver.path}: cannot resume, {k}={ck['config'].get(k)!r} in the checkpoint "
                              f"but {run.resolved.get(k)!r} now")
    fit = run.fit
    fit.model.load_state_dict(ck["model"])
    fit.opt.load_state_dict(ck["optimizer"])
    fit.sched.load_state_dict(ck["scheduler"])
    fit.gen.set_state(ck["generator"])
    torch.set_rng_state(ck["torch_rng"])
    fit.start_epoch, fit.history, fit.best = ck["epoch"], ck["history"], ck["best"]
    run.log(f"resumed from {saver.path} after epoch {fit.start_epoch}")


def _bar_step(bar, epoch: int, steps_per_epoch: int, step: int, loss: float) -> None:
    bar.update(epoch * steps_per_epoch + step + 1, epoch=epoch + 1, loss=loss)


def _train_epoch(run: _Run, epoch: int, bar) -> dict:
    """One epoch and its validation; updates the best state and returns the history record."""
    cfg, d, t, fit = run.cfg, run.data, run.t, run.fit
    te = time.time()
    idx = d.plan.indices(fit.gen)
    batches = epoch_batches(t.Xtr, t.Ytr, t.Wtr, idx, cfg.batch_size, run.aug, fit.gen, t.mean, t.std, run.device,
                            run.train_prec.channels_last, cmo=d.cmo, n_real=d.n_real, mixup_alpha=cfg.mixup_alpha)
    on_step = None if bar is None else functools.partial(_bar_step, bar, epoch, fit.steps_per_epoch)
    ep = train_one_epoch(fit.model, batches, fit.criterion, fit.opt, fit.sched, run.device,
                         run.train_prec.autocast_dtype, epoch, on_step=on_step)
    train_s = time.time() - te
    m = validate(fit.model, t.Xva, d.yva, d.classes, t.mean, t.std, run.device, run.infer_prec.channels_last,
                 run.infer_prec.autocast_dtype)
    score = m[cfg.select_metric]
    rec = {"epoch": epoch + 1, "loss": ep["loss"], "first_step_loss": ep["first_step_loss"],
           "lr": float(fit.sched.get_last_lr()[0]), "train_s": round(train_s, 2),
           "images_per_s": round(len(idx) / max(train_s, 1e-9), 1),
           "val_balanced_accuracy": m["balanced_accuracy"], "val_accuracy": m["accuracy"],
           "val_macro_auc": m["macro_auc"]}
    if score is not None and score > fit.best["score"]:
        fit.best = {"score": score, "epoch": epoch + 1,
                    "state": {k: v.detach().cpu().clone() for k, v in fit.model.state_dict().items()}}
    run.log(f"epoch {epoch + 1}/{cfg.epochs} loss {rec['loss']:.4f} val bacc {m['balanced_accuracy']:.4f} "
            f"acc {m['accuracy']:.4f} auc {m['macro_auc']:.4f} ({train_s:.1f}s, {rec['images_per_s']} img/s)")
    return rec


def _train_epochs(run: _Run, saver, last_epoch: int, quiet: bool) -> None:
    """Epochs start_epoch..last_epoch, each followed by a checkpoint (resumable) and the history's update."""
    import torch

    from ..progress import Progress

    fit = run.fit
    bar = None if quiet else Progress(last_epoch * fit.steps_per_epoch, f"train classifier ({run.cfg.backbone})",
                                      start=fit.start_epoch * fit.steps_per_epoch, unit="step")
    for epoch in range(fit.start_epoch, last_epoch):
        fit.history.append(_train_epoch(run, epoch, bar))
        saver.save({"epoch": epoch + 1, "model": fit.model.state_dict(), "optimizer": fit.opt.state_dict(),
                    "scheduler": fit.sched.state_dict(), "generator": fit.gen.get_state(),
                    "torch_rng": torch.get_rng_state(), "history": fit.history, "best": fit.best,
                    "config": run.resolved})
        TrainedClassifier(run.out).write_history(fit.history)
    if bar:
        bar.close()


def _selected_model(run: _Run):
    """The best epoch's weights (on the CPU), with the head re-trained when cRT is on (recorded in resolved)."""
    import copy

    cfg, d, t, fit = run.cfg, run.data, run.t, run.fit
    final = copy.deepcopy(fit.model).cpu()
    final.load_state_dict(fit.best["state"])
    if cfg.crt_epochs:
        from .retrain import retrain_head

        final = final.to(run.device)
        run.resolved["crt"] = retrain_head(final, t.Xtr[:d.n_real], t.Ytr[:d.n_real], len(d.classes), t.mean, t.std,
                                           run.device, cfg.crt_epochs, fit.gen, val=(t.Xva, d.yva, d.classes))
        final = final.cpu()
        crt = run.resolved["crt"]
        run.log(f"classifier re-trained on class-balanced features ({cfg.crt_epochs} epochs): val balanced accuracy "
                f"{crt['val_balanced_accuracy_before']:.4f} -> {crt['val_balanced_accuracy']:.4f}")
    return final


def _write_selected(run: _Run, data, write_reports: bool) -> dict:
    """Save the selected model (weights, final CONFIG_FILE) and its val evaluation; returns the val metrics."""

    from .evaluate import write_evaluation
    from .model import save_classifier

    cfg, d, t, best = run.cfg, run.data, run.t, run.fit.best
    final = _selected_model(run)
    run.resolved["selected_epoch"] = best["epoch"]
    run.resolved["selected_on"] = f"val {cfg.select_metric}"
    run.resolved["train_wall_s"] = round(sum(h["train_s"] for h in run.fit.history), 1)
    TrainedClassifier(run.out).write_config(run.resolved)
    counts = np.bincount(d.ytr[:d.n_real], minlength=len(d.classes)).tolist()
    save_classifier(final, run.out, backbone=cfg.backbone, classes=d.classes, resolution=d.res,
                    mean=d.mean.tolist(), std=d.std.tolist(), config=run.resolved, data_revision=data_revision(data),
                    train_class_counts=dict(zip(d.classes, counts)))
    final = final.to(run.device)
    logits_va = predict_logits(final, t.Xva, t.mean, t.std, run.device, channels_last=run.infer_prec.channels_last,
                               amp_dtype=run.infer_prec.autocast_dtype).numpy()
    metrics = write_evaluation(run.out, d.yva, logits_va, d.classes, split="val", model_dir=run.out, data=str(data),
                               extra={"selected_epoch": best["epoch"], "train_config": CONFIG_FILE},
                               plots=write_reports, bootstrap=200 if write_reports else 0, seed=cfg.seed)
    run.log(f"selected epoch {best['epoch']}: val balanced accuracy {metrics['balanced_accuracy']:.4f}, "
            f"accuracy {metrics['accuracy']:.4f}, macro AUC {metrics['macro_auc']:.4f}")
    return metrics


def train_classifier(data, out, backbone: str = "resnet18", loss: str = "ce", epochs: int | None = None,
                     seed: int = 0, resolution: int | None = None, splits=None, synthetic_manifest=None,
                     synthetic_ratio: float | None = None, sampler: str | None = None, resume: bool = False,
                     stop_after: int | None = None, quiet: bool = False, write_reports: bool = True, **kw) -> dict:
    """Train on the train split, select on val balanced accuracy; returns the val metrics of the selected model.

    `kw` sets any ClassifierTrainConfig field (batch_size, lr, optimizer, weight_decay, augment={...}, loss_kw={...}, ...).
    `resume`: continue from OUT's last-epoch checkpoint. `stop_after`: stop after that many epochs in total (the
    checkpoint lets a later call resume), e.g. to split a long run.
    """
    import torch

    from ..training import CheckpointSaver

    cfg, aug_cfg = _make_config(kw, epochs, backbone=backbone, loss=loss, sampler=sampler or "none", seed=seed,
                                resolution=resolution, synthetic_ratio=synthetic_ratio,
                                synthetic_manifest=str(synthetic_manifest) if synthetic_manifest else None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")

    t0 = time.time()
    d = _load_train_set(data, splits, cfg)
    train_prec, infer_prec = _resolve_precisions(cfg, d.res, device, log)
    tensors = _to_tensors(d, device)
    log(f"data: {d.n_real} real + {len(d.ytr) - d.n_real} synthetic train, {len(d.yva)} val, {len(d.classes)} "
        f"classes at {d.res}px ({time.time() - t0:.1f}s)")
    fit = _build_fit(cfg, d, device, train_prec.channels_last)
    resolved = _resolved_config(cfg, aug_cfg, d, fit, data, splits, device, train_prec, infer_prec)
    run = _Run(cfg, aug_cfg, out, log, device, d, train_prec, infer_prec, tensors, fit, resolved)
    saver = CheckpointSaver(TrainedClassifier(out).checkpoint_path)
    _resume(run, saver, resume)
    TrainedClassifier(out).write_config(resolved)

    last_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, int(stop_after))
    _train_epochs(run, saver, last_epoch, quiet)
    if last_epoch < cfg.epochs:
        log(f"stopped after epoch {last_epoch} of {cfg.epochs}; resume with resume=True / --resume")
        return {"stopped_after": last_epoch, "history": fit.history}
    return _write_selected(run, data, write_reports)
