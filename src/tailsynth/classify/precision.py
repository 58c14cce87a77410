"""Numeric precision and memory format of the classifier on CPU and GPU: `precision` auto | fp32 | bf16.

bf16 autocast helps a CPU only where it has a native bf16 path (AVX-512 BF16 or AMX) and then not for every
network: on the development machines it made resnet18 training at 64 px 1.5x faster and EfficientNet-Lite0
training slower (docs/results/classifier_bench.md). So `auto` measures instead of guessing: it times a few
training (or inference) steps of the actual backbone, size and batch in each variant (fp32 / bf16, contiguous /
channels_last) once per machine kind and caches the figures; a variant is chosen over fp32 contiguous only when
it is at least `MIN_GAIN` faster. On a CPU without native bf16, auto never picks bf16 (emulated bf16 is slow).
Weights, loss and optimizer stay fp32 under autocast; the model is never cast to bf16 for training.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))  # (precision, channels_last)
# The batch at which inference variants are timed: one measurement serves validation, evaluation and features.
INFER_BATCH = 256
MIN_GAIN = 1.1  # a variant must beat fp32 contiguous by 10% to be chosen: below that it is within timing noise


@dataclass(frozen=True)
class Choice:
    precision: str  # fp32 or bf16 (resolved)
    channels_last: bool
    reason: str

    @property
    def autocast_dtype(self):
        import torch

        return torch.bfloat16 if self.precision == "bf16" else None

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def isa_summary(flags: set[str] | None = None) -> str:
    """The vector ISA flags that decide speed here (what every speed figure of the project is written beside)."""
    flags = cpu_flags() if flags is None else flags
    keep = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f == "avx2")
    return " ".join(keep) or "no AVX2/AVX-512 flags"


def native_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file(key: dict) -> Path:
    from .pretrained import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir().parent / "precision" / f"{key['backbone']}-{key['resolution']}-{key['purpose']}-{digest}.json"


def measure(backbone: str, resolution: int, batch_size: int, purpose: str = "train", variants=VARIANTS,
            steps: int = 4, warmup: int = 2, num_classes: int = 7, device: str = "cpu") -> list[dict]:
    """Images/s of `purpose` (train: forward + backward + AdamW step; infer: forward) per (precision,
    channels_last) variant, each on a fresh model, with the process's CPU seconds beside the wall time."""
    import timm
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    rows = []
    for prec, cl in variants:
        torch.manual_seed(0)
        model = timm.create_model(backbone, pretrained=False, num_classes=num_classes).to(dev)
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = model.to(memory_format=fmt)
        x = torch.randn(batch_size, 3, resolution, resolution, device=dev).contiguous(memory_format=fmt)
        y = torch.randint(0, num_classes, (batch_size,), device=dev)
        dtype = torch.bfloat16 if prec == "bf16" else None
        opt = torch.optim.AdamW(model.parameters(), 1e-4)

        def step():
            if purpose == "train":
                with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                    loss = F.cross_entropy(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                    model(x)

        model.train(purpose == "train")
        for _ in range(warmup):
            step()
        sync()
        w, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        sync()
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        rows.append({"precision": prec, "channels_last": cl, "images_per_s": batch_size * steps / wall,
                     "images_per_cpu_s": batch_size * steps / max(cpu, 1e-9)})
    return rows


# Whether auto may train in bf16. It may not: on HAM10000 fold 0 (resnet18, 6 epochs) bf16 training reached a BMA
# 0.039 below fp32's, paired bootstrap interval [-0.077, -0.004], so the pre-registered check ("same within noise")
# failed (docs/results/classifier_comparison_ham.md). Inference in bf16 changes probabilities by ~1e-2 at most and
# stays allowed. Set this to True only after a check over several seeds passes.
AUTO_BF16_TRAINING = False


def candidates(purpose: str, bf16_native: bool) -> tuple[tuple[str, bool], ...]:
    """The variants auto measures for PURPOSE on a CPU with or without native bf16."""
    if bf16_native and (purpose == "infer" or AUTO_BF16_TRAINING):
        return VARIANTS
    return tuple(v for v in VARIANTS if v[0] == "fp32")


def choose(rows: list[dict]) -> tuple[str, bool, str]:
    """The fastest variant, unless it beats fp32 contiguous by less than MIN_GAIN."""
    base = next(r for r in rows if r["precision"] == "fp32" and not r["channels_last"])
    best = max(rows, key=lambda r: r["images_per_s"])
    gain = best["images_per_s"] / base["images_per_s"]
    if best is base or gain < MIN_GAIN:
        return "fp32", False, f"fp32 contiguous measured fastest within {MIN_GAIN}x ({base['images_per_s']:.0f} img/s)"
    return best["precision"], best["channels_last"], (
        f"{best['precision']}{' + channels_last' if best['channels_last'] else ''} measured "
        f"{gain:.2f}x fp32 ({best['images_per_s']:.0f} vs {base['images_per_s']:.0f} img/s)")


def probe(backbone: str, resolution: int, batch_size: int, purpose: str, log=None) -> dict:
    """The cached measurement for this machine kind, backbone, size, batch and purpose (measured on first use)."""
    import torch

    flags = cpu_flags()
    key = {"cpu": cpu_model(), "isa": isa_summary(flags), "torch": str(torch.__version__),
           "threads": torch.get_num_threads(), "backbone": backbone, "resolution": int(resolution),
           "batch": int(batch_size), "purpose": purpose,
           "variants": [f"{p}{'+cl' if cl else ''}" for p, cl in candidates(purpose, native_bf16(flags))]}
    path = _cache_file(key)
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
            if rec.get("key") == key:
                return rec
        except (OSError, ValueError):
            pass  # re-measured below
    variants = candidates(purpose, native_bf16(flags))
    if log:
        log(f"precision auto: measuring {len(variants)} variants of {backbone} at {resolution}px ({purpose}, once "
            f"per machine kind; cached in {path.parent})")
    rows = measure(backbone, resolution, batch_size, purpose, variants)
    prec, cl, reason = choose(rows)
    rec = {"key": key, "rows": rows, "precision": prec, "channels_last": cl, "reason": reason,
           "load_average": os.getloadavg()[0], "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, path)
    return rec


def resolve(precision: str | None, channels_last: bool | None, *, backbone: str, resolution: int, batch_size: int,
            device: str = "cpu", purpose: str = "train", log=None) -> Choice:
    """What `precision` (and an explicit `channels_last`, or None to decide with it) means on this device.
    None is the default from before the option: bf16 on CUDA, fp32 on CPU."""
    if precision is None:
        precision = "bf16" if device == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    if device == "cuda":
        # bf16 autocast and channels_last are the GPU's fast path for these convnets.
        prec = "fp32" if precision == "fp32" else "bf16"
        return Choice(prec, True if channels_last is None else channels_last, f"{prec} on CUDA")
    if precision == "fp32":
        return Choice("fp32", bool(channels_last), "fp32 (asked)")
    if precision == "bf16":
        why = "bf16 (asked)" if native_bf16() else "bf16 (asked; this CPU has no native bf16: emulated and slow)"
        return Choice("bf16", bool(channels_last), why)
    rec = probe(backbone, resolution, batch_size, purpose, log=log)
    cl = rec["channels_last"] if channels_last is None else channels_last
    note = (" (no native bf16 on this CPU)" if not native_bf16()
            else " (bf16 training not shown equal to fp32: not tried)" if purpose == "train" and not AUTO_BF16_TRAINING
            else "")
    return Choice(rec["precision"], bool(cl), "auto: " + rec["reason"] + note)
