"""How the UNet runs inside the sampling loop: eager torch, torch.compile (inductor) or ONNX Runtime.

Every runtime computes the same fp32 function of (sample, timestep, class label), so images from one seed agree
to float rounding (checked in tests/diffusion/test_runtime.py, max abs difference < 1e-3 on [-1, 1] images) and a
synthesizer's gate figures, measured with eager fp32, carry over. `precision="bf16"` (CPU autocast) is the one
lever that changes the outputs (at most a few uint8 levels), so it was gated: `synth-quality` with bf16 against fp32
on the shipped synthesizer met the pre-registered rule of equal gates (docs/results/performance.md, section 2).
`precision="auto"` (generate's default) therefore samples in bf16 where the CPU computes bf16 natively (oneDNN:
AVX512-BF16 or AMX; 1.8x the fp32 images/s on the 2-core development machine) and in fp32 elsewhere, where bf16
would be emulated and slower. The precision that ran is recorded with the images.

- eager: the diffusers module as loaded.
- compile: `torch.compile` with inductor and weight freezing (constant-folds the weights, pre-packs the
  convolution weights and fuses group norm + SiLU + the residual adds, which eager runs as separate passes over
  memory). Compiled lazily on the first call, once per batch shape.
- onnxruntime: the UNet exported once to ONNX (dynamic batch axis) into a cache file keyed by a hash of the
  weights and the architecture, then run by an ORT session with as many intra-op threads as torch uses and
  spinning off (idle ORT threads would otherwise busy-wait on cores the rest of the loop needs). CPU only.
- channels_last (torch runtimes): NHWC activations, the layout oneDNN's convolutions prefer on CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..onnx_session import cpu_session

RUNTIMES = ("eager", "compile", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "auto")
ONNX_OPSET = 18
ONNX_INPUTS = ("sample", "timestep", "class_labels")
ONNX_OUTPUT = "noise_pred"
# An exported graph must reproduce eager fp32 to this (max abs difference of the model output), else it is rebuilt.
PARITY_TOLERANCE = 1e-4


def check_runtime(runtime: str, channels_last: bool = False, precision: str = "fp32") -> None:
    """Raise a ConfigError naming the setting when the combination does not exist."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if runtime == "onnxruntime" and channels_last:
        raise ConfigError("channels_last applies to the torch runtimes (eager, compile); onnxruntime chooses its own layout")
    if runtime == "onnxruntime" and precision == "bf16":
        raise ConfigError("runtime onnxruntime runs fp32 only (precision bf16 is a torch CPU autocast option)")


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether this CPU computes bf16 in hardware (oneDNN's check). GPUs: False, i.e. `auto` keeps fp32 there; the
    bf16 gate comparison was made on CPU."""
    import torch

    if device_type != "cpu":
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def resolve_precision(precision: str, runtime: str = "eager", device_type: str = "cpu") -> str:
    """'auto' -> 'bf16' on a CPU with native bf16 and a torch runtime, else 'fp32'; other values unchanged."""
    if precision != "auto":
        return precision
    return "bf16" if runtime != "onnxruntime" and native_bf16(device_type) else "fp32"


def default_cache_dir() -> Path:
    """$TAILSYNTH_CACHE_DIR, else $XDG_CACHE_HOME/tailsynth, else ~/.cache/tailsynth."""
    if os.environ.get("TAILSYNTH_CACHE_DIR"):
        return Path(os.environ["TAILSYNTH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tailsynth"


def weights_key(unet) -> str:
    """sha256 (16 hex digits) of the UNet's architecture config and fp32 weights: the ONNX cache key. Computed
    from the loaded module, so a model folder, an in-memory model and fp16-shipped weights all key correctly."""
    import torch

    h = hashlib.sha256(json.dumps(dict(unet.config), sort_keys=True, default=str).encode())
    for name, t in sorted(unet.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _forward_module(unet):
    """The UNet as a module of plain tensors (sample, float timestep per row, class label per row) -> prediction."""
    import torch

    class UNetForward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, class_labels):
            return self.unet(sample, timestep, class_labels=class_labels).sample

    return UNetForward().eval()


def export_unet_onnx(unet, path: str | Path) -> Path:
    """Write the UNet as ONNX (opset 18, fp32, dynamic batch axis on every input); atomic, so processes that
    share a cache (concurrent shards) never read a half-written file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    r = int(unet.config.sample_size)
    c = int(unet.config.in_channels)
    # Batch 2 in the example: a batch of 1 lets the tracer specialise the batch dimension away.
    example = (torch.zeros(2, c, r, r), torch.full((2,), 500.0), torch.zeros(2, dtype=torch.long))
    batch = torch.export.Dim("batch", min=1, max=8192)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad():
            torch.onnx.export(_forward_module(unet), example, str(tmp), input_names=list(ONNX_INPUTS),
                              output_names=[ONNX_OUTPUT], dynamic_shapes={k: {0: batch} for k in ONNX_INPUTS},
                              opset_version=ONNX_OPSET, dynamo=True, external_data=False, verbose=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class UNetRunner:
    """Callable (sample N,C,R,R fp32, timestep (0-d or N), class labels N) -> prediction N,3,R,R fp32, plus
    `info` (what ran, how long preparing took, the export's parity with eager)."""

    def __init__(self, unet, runtime: str = "eager", channels_last: bool = False, precision: str = "fp32",
                 cache_dir: str | Path | None = None, threads: int | None = None):
        import torch

        check_runtime(runtime, channels_last, precision)
        t0 = time.perf_counter()
        self.unet = unet.eval()
        self.device = next(unet.parameters()).device
        requested, precision = precision, resolve_precision(precision, runtime, self.device.type)
        self.runtime, self.channels_last, self.precision = runtime, channels_last, precision
        self.info: dict = {"runtime": runtime, "channels_last": channels_last, "precision": precision,
                           "precision_requested": requested,
                           "threads": int(threads or torch.get_num_threads())}
        self._sess = None
        self._compiled_batch = 0  # compile: the batch warmup() compiled for; smaller batches are padded up to it
        if runtime == "onnxruntime":
            if self.device.type != "cpu":
                raise ConfigError(f"runtime onnxruntime runs on CPU only (the model is on {self.device})")
            self._sess = self._load_onnx(Path(cache_dir) if cache_dir else default_cache_dir(), threads)
        else:
            if channels_last:
                self.unet = self.unet.to(memory_format=torch.channels_last)
            self._fn = self.unet
            if runtime == "compile":
                # Freezing (inference only) lets inductor fold and pre-pack what it treats as constant. Compiled code
                # is reused for another UNet of the same architecture and batch in this process (weights stay
                # inputs to it: tests/diffusion/test_runtime.py checks two models against their own eager outputs).
                self._fn = torch.compile(self.unet, options={"freezing": True})
        self.info["prepare_s"] = round(time.perf_counter() - t0, 3)

    def _load_onnx(self, cache_dir: Path, threads: int | None):
        import torch

        key = weights_key(self.unet)
        path = cache_dir / f"unet-{key}-opset{ONNX_OPSET}.onnx"
        self.info.update(onnx_path=str(path), onnx_cached=path.is_file())
        r = int(self.unet.config.sample_size)
        g = torch.Generator().manual_seed(0)
        probe = (torch.randn(3, int(self.unet.config.in_channels), r, r, generator=g), torch.tensor([1.0, 400.0, 900.0]),
                 torch.tensor([0, 1, int(self.unet.config.num_class_embeds or 1) - 1]))
        with torch.inference_mode():
            want = _forward_module(self.unet)(*probe).numpy()
        diff = math.inf
        for attempt in (0, 1):
            if attempt or not path.is_file():
                export_unet_onnx(self.unet, path)
            try:
                sess = cpu_session(path, threads or torch.get_num_threads())
                got = sess.run([ONNX_OUTPUT], dict(zip(ONNX_INPUTS, (p.numpy() for p in probe))))[0]
            except Exception:
                if attempt:
                    raise
                continue  # a truncated or foreign file in the cache: export again
            diff = float(np.abs(got - want).max())
            if diff <= PARITY_TOLERANCE:
                self.info["onnx_parity_max_abs_diff"] = diff
                return sess
        raise ConfigError(f"{path}: exported UNet differs from eager torch by {diff:.2e} "
                          f"(tolerance {PARITY_TOLERANCE}); cannot run it with onnxruntime")

    def warmup(self, batch: int) -> None:
        """One call at the sampling loop's batch shape, so torch.compile compiles (and every runtime allocates)
        before a caller starts its clock; the time is added to info["prepare_s"]."""
        import torch

        t0 = time.perf_counter()
        if self.runtime == "compile":
            self._compiled_batch = max(self._compiled_batch, int(batch))
        r, c = int(self.unet.config.sample_size), int(self.unet.config.in_channels)
        with torch.inference_mode():
            self(torch.zeros(batch, c, r, r, device=self.device), torch.tensor(500, device=self.device),
                 torch.zeros(batch, dtype=torch.long, device=self.device))
        self.info["prepare_s"] = round(self.info["prepare_s"] + time.perf_counter() - t0, 3)

    def __call__(self, sample, timestep, class_labels):
        import torch

        n = sample.shape[0]
        if self._sess is not None:
            t = np.broadcast_to(np.asarray(timestep, np.float32).reshape(-1), (n,)).copy()
            feed = {"sample": sample.detach().float().contiguous().numpy(), "timestep": t,
                    "class_labels": class_labels.detach().to(torch.long).numpy()}
            return torch.from_numpy(self._sess.run([ONNX_OUTPUT], feed)[0])
        if n < self._compiled_batch:
            # Rows are independent in the UNet (per-sample norms, no batch statistics), so padding a short last batch
            # to the compiled shape gives the same rows; it saves a second compilation (a minute or more on 2 cores).
            pad = self._compiled_batch - n
            sample = torch.cat([sample, sample[:1].expand(pad, *sample.shape[1:])])
            class_labels = torch.cat([class_labels, class_labels[:1].expand(pad)])
            if torch.is_tensor(timestep) and timestep.ndim == 1:
                timestep = torch.cat([timestep, timestep[:1].expand(pad)])
            return self(sample, timestep, class_labels)[:n]
        if self.runtime == "compile":
            # Compiled code guards on the inputs' dispatch keys, which differ between tensors made inside inference
            # mode (the loop's samples) and outside it (the scheduler's timesteps, the labels): one kind for all, or
            # the first sampling step recompiles.
            with torch.inference_mode():
                sample, timestep, class_labels = (v.clone() if torch.is_tensor(v) and not v.is_inference() else v
                                                  for v in (sample, timestep, class_labels))
        if self.channels_last:
            sample = sample.contiguous(memory_format=torch.channels_last)
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = self._fn(sample, timestep, class_labels=class_labels).sample
            return out.float()
        return self._fn(sample, timestep, class_labels=class_labels).sample


def as_runner(unet_or_runner) -> UNetRunner:
    """A UNetRunner as given, or eager fp32 around a bare diffusers UNet."""
    return unet_or_runner if isinstance(unet_or_runner, UNetRunner) else UNetRunner(unet_or_runner)
