"""Export a classifier folder to ONNX and to a Triton model repository.

The exported graph takes **uint8 NHWC images at the model resolution** and does the scaling and normalisation
itself, so a transformer ships 1 byte per pixel of a small image to the predictor (not full-size fp32 tensors).
Outputs: `probabilities` (softmax, N x C) and `features` (penultimate embedding, N x D, for drift monitoring).

Repository layout (the KServe `storageUri` is REPO itself, the root, and requests name `lesion-classifier`):
  REPO/lesion-classifier/config.pbtxt
  REPO/lesion-classifier/labels.txt, model_card.json, model_card.md (tailsynth.cards), serving.json[, embedding.npz]
  REPO/lesion-classifier/<version>/model.onnx            (+ model.py when target == "local")
and the ensemble that takes image files instead of pixels (`tailsynth serve --mode ensemble`, write_ensemble):
  REPO/preprocess/{config.pbtxt, <version>/model.py, <version>/tailsynth/...}    (python backend, both targets)
  REPO/postprocess/{config.pbtxt, <version>/model.py, <version>/tailsynth/...[, embedding.npz]}
  REPO/lesion-classifier-e2e/{config.pbtxt, <version>/}   (platform ensemble)
target "cluster": platform onnxruntime_onnx (GPU instances, optional TensorRT accelerator).
target "local": backend "python" running onnxruntime inside the python backend, because the tritonserver
binary shipped in nvidia-pytriton has only the python backend. That is the one difference between the two.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cards import card_html, make_card, write_card
from .classify.folders import METRICS_FILE
from .classify.metadata import ClassifierMeta
from .errors import ConfigError
from .formatting import fmt
from .hashing import model_version
from .pages import Section
from .serve.backends import ENSEMBLE_NAME, POSTPROCESS_NAME, PREPROCESS_NAME

MODEL_NAME = "lesion-classifier"
INPUT_NAME = "image"
OUTPUTS = ("probabilities", "features")
INTENDED_USE = "research use, not for diagnosis"
PARITY_TOLERANCE = 1e-4
TARGETS = ("local", "cluster")


def _serving_graph(model, mean: Sequence[float], std: Sequence[float]):
    import torch

    class ServingGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

        def forward(self, image):
            x = (image.permute(0, 3, 1, 2).float() - self.mean) / self.std
            f = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
            return torch.softmax(self.net.get_classifier()(f), dim=1), f

    return ServingGraph().eval()


def export_onnx(model, meta: ClassifierMeta, path: str | Path, opset: int = 18) -> Path:
    """Write the uint8-in / probabilities+features-out graph with a dynamic batch axis."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = _serving_graph(model, meta.mean, meta.std)
    r = int(meta.resolution)
    # Batch 2 in the example: a batch of 1 lets the tracer specialise the batch dimension away.
    example = torch.zeros((2, r, r, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        torch.onnx.export(graph, (example,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUTS),
                          dynamic_shapes={"image": {0: batch}}, opset_version=opset, dynamo=True,
                          external_data=False, verbose=False)
    return path


def check_parity(model, meta: ClassifierMeta, onnx_path: str | Path, images: np.ndarray | None = None,
                 seed: int = 0) -> dict:
    """Max abs difference of probabilities (and features) between torch eager and onnxruntime.

    Uses batches of 1 and of 5 so the dynamic batch axis is exercised, not just declared."""
    import onnxruntime as ort

    from .classify.model import predict_arrays

    r = int(meta.resolution)
    if images is None:
        images = np.random.default_rng(seed).integers(0, 256, (5, r, r, 3), dtype=np.uint8)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    # fp32: the ONNX graph is fp32, and parity is a check of the export, not of a precision choice
    p_t, f_t, _ = predict_arrays(model, meta, images, features=True, precision="fp32")
    p_o, f_o = sess.run(list(OUTPUTS), {INPUT_NAME: images})
    p_1, _ = sess.run(list(OUTPUTS), {INPUT_NAME: images[:1]})
    return {
        "max_abs_diff_probabilities": float(np.abs(p_t - p_o).max()),
        "max_abs_diff_features": float(np.abs(f_t - f_o).max()),
        "max_abs_diff_batch1": float(np.abs(p_t[:1] - p_1).max()),
        "top1_agreement": float((p_t.argmax(1) == p_o.argmax(1)).mean()),
        "n_images": len(images),
        "tolerance": PARITY_TOLERANCE,
    }


def _require_parity(parity: dict, onnx_path: Path, tolerance: float) -> None:
    """Every difference must be a finite number within tolerance: `nan > tol` is False, so a bare comparison would
    pass a model whose outputs are NaN. (Top-1 agreement follows from the bound except at exact near-ties.)"""
    diffs = {k: parity[k] for k in ("max_abs_diff_probabilities", "max_abs_diff_batch1")}
    bad = {k: v for k, v in diffs.items() if not (np.isfinite(v) and v <= tolerance)}
    if bad or not np.isfinite(parity["max_abs_diff_features"]):
        from .errors import DataError

        raise DataError(f"{onnx_path}: ONNX and torch disagree ({', '.join(f'{k} {v:.3g}' for k, v in diffs.items())}, "
                        f"features {parity['max_abs_diff_features']:.3g}, top-1 agreement "
                        f"{parity['top1_agreement']:.3f}; tolerance {tolerance}): nothing was exported")


def build_model_card(meta: ClassifierMeta, version: str, parity: dict, metrics: dict | None, target: str,
                     lineage: dict | None = None, feature_dim: int | None = None) -> dict:
    """The exported classifier's card (tailsynth.cards schema)."""
    per_class = None
    if metrics:
        per_class = metrics.get("per_class") or {k: v for k, v in metrics.items() if isinstance(v, dict)} or None
    res, n = int(meta.resolution), len(meta.classes)
    return make_card(
        "classifier", MODEL_NAME, version,
        format={"weights": "ONNX (opset graph with uint8 scaling and normalisation inside)",
                "serving": f"Triton model repository, target {target}"},
        intended_use=INTENDED_USE,
        inputs={INPUT_NAME: {"dtype": "UINT8", "layout": "NHWC", "shape": [-1, res, res, 3], "mean": list(meta.mean),
                             "std": list(meta.std)}},
        outputs={"probabilities": {"dtype": "FP32", "shape": [-1, n], "meaning": "softmax over the classes"},
                 "features": {"dtype": "FP32", "shape": [-1, feature_dim or -1],
                              "meaning": "penultimate embedding, for drift monitoring"}},
        classes=meta.classes, data_revision=meta.data_revision, metrics=metrics or {},
        changelog={version: f"exported for {target} serving from the checkpoint of this version"},
        backbone=meta.backbone, per_class_metrics=per_class or {}, training_config=meta.config or {},
        onnx_parity=parity, target=target, lineage=lineage)


def model_card_sections(card: dict) -> list[Section]:
    """The classifier's own sections of its card (after the common ones of tailsynth.cards), for its markdown
    (model_card.md) and its HTML page alike."""
    facts = [["backbone", f"`{card['backbone']}`"],
             ["ONNX parity vs torch (max abs diff of probabilities)",
              f"{card['onnx_parity']['max_abs_diff_probabilities']:.2e}"],
             ["outputs", ("class probabilities for a dermoscopy image; not a diagnosis, they must not drive "
                          "clinical decisions")]]
    sections: list[Section] = [("Classifier", "facts", [["item", "value"], facts])]
    sections += lineage_sections(card.get("lineage"))
    scalars = {k: v for k, v in card["metrics"].items() if isinstance(v, (int, float))}
    if scalars:
        sections.append(("Validation metrics", "table", [["metric", "value"],
                                                         [[k, fmt(v, 4)] for k, v in scalars.items()]]))
    pc = card["per_class_metrics"]
    if pc:
        cols = sorted({m for v in pc.values() if isinstance(v, dict) for m in v})
        sections.append(("Per-class metrics", "table", [["class", *cols],
                                                        [[c, *(fmt(v.get(m, ""), 4) for m in cols)]
                                                         for c, v in pc.items()]]))
    else:
        note = f"No validation metrics were found beside the checkpoint (MODEL_DIR/{METRICS_FILE})."
        sections.append(("", "text", [note]))
    return sections


def model_card_html(card: dict, nav=()) -> str:
    return card_html(card, model_card_sections(card), nav=nav)


def lineage_sections(lin: dict | None) -> list[Section]:
    """What the model was made from (`tailsynth lineage` follows these back to the images)."""
    if not lin:
        return []
    syn, synth, sel = lin.get("synthetic_set"), lin.get("synthesizer") or {}, lin.get("selection") or {}
    rows = [["training data revision", f"`{(lin.get('training_data') or {}).get('revision')}`"]]
    if syn:
        rows += [["synthetic set revision (DVC)", f"`{syn.get('dvc_md5')}` ({syn.get('n_images')} images)"],
                 ["synthesizer hash", f"`{synth.get('hash')}`"],
                 ["selection settings", ", ".join(f"{k}={sel.get(k)}" for k in ("score", "gamma", "calibrate",
                                                                                 "weights") if k in sel)]]
    else:
        rows.append(["synthetic set", "none (real data only)"])
    return [("Lineage", "facts", [["link", "value"], rows])]


def _dims(v: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(d)) for d in v) + " ]"


# Dynamic batching per target. Cluster (GPU): wait up to 2 ms to fill batches of 8/16/32, which a GPU turns into
# throughput. Local (CPU, python-backend instances): no preferred sizes and no queue delay. Triton then runs at once
# whatever queued while the instance was busy, so batches grow with the load by themselves, and a lone request is
# not held back: with a preferred size that cannot be formed, the batcher waits out the whole delay, which at
# concurrency 1 adds it to every request.
BATCHING_DEFAULTS = {"cluster": {"preferred_batch_sizes": (8, 16, 32), "max_queue_delay_us": 2000},
                     "local": {"preferred_batch_sizes": (), "max_queue_delay_us": 0}}


def parse_batch_sizes(text: str | None) -> tuple[int, ...] | None:
    """"8,16,32" -> (8, 16, 32); "none" or "" -> () (no preferred sizes); None -> None (the target's default)."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(x) for x in text.replace("/", ",").split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"preferred batch sizes {text!r}: expected comma-separated integers or 'none'") from None
    if any(b < 1 for b in sizes):
        raise ConfigError(f"preferred batch sizes {text!r}: every size must be >= 1")
    return sizes


def triton_config(*, classes: Sequence[str], resolution: int, feature_dim: int, version: str, target: str,
                  max_batch_size: int = 32, preferred_batch_sizes: Sequence[int] | None = None,
                  max_queue_delay_us: int | None = None, instances: int = 1, tensorrt: bool = False,
                  execution_env: str | None = None, ort_threads: int = 0, ort_spinning: bool = False) -> str:
    """config.pbtxt text. preferred_batch_sizes / max_queue_delay_us None: the target's BATCHING_DEFAULTS.

    ort_threads / ort_spinning (local target): onnxruntime's intra-op threads inside the python-backend model
    (0 = onnxruntime's default, one per physical core) and whether they busy-wait between operators; written as
    model parameters that tailsynth/serve/triton_python_model.py reads."""
    if target not in TARGETS:
        raise ConfigError(f"target {target!r}: expected one of {TARGETS}")
    if max_batch_size < 1:
        raise ConfigError(f"max_batch_size {max_batch_size}: must be >= 1")
    if instances < 1 or ort_threads < 0 or (max_queue_delay_us is not None and max_queue_delay_us < 0):
        raise ConfigError(f"instances {instances} must be >= 1, ort_threads {ort_threads} and max_queue_delay_us "
                          f"{max_queue_delay_us} >= 0")
    if preferred_batch_sizes is None:
        preferred_batch_sizes = BATCHING_DEFAULTS[target]["preferred_batch_sizes"]
    if max_queue_delay_us is None:
        max_queue_delay_us = BATCHING_DEFAULTS[target]["max_queue_delay_us"]
    preferred = [b for b in preferred_batch_sizes if b <= max_batch_size]
    if preferred_batch_sizes and not preferred:
        preferred = [max_batch_size]
    head = [f'name: "{MODEL_NAME}"']
    head.append('platform: "onnxruntime_onnx"' if target == "cluster" else 'backend: "python"')
    # max_batch_size is the largest batch the dynamic batcher may form, not the client's batch size.
    head.append(f"max_batch_size: {max_batch_size}")
    body = [
        "input [",
        f'  {{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: {_dims([resolution, resolution, 3])} }}',
        "]",
        "output [",
        f'  {{ name: "probabilities" data_type: TYPE_FP32 dims: {_dims([len(classes)])} label_filename: "labels.txt" }},',
        f'  {{ name: "features" data_type: TYPE_FP32 dims: {_dims([feature_dim])} }}',
        "]",
        "dynamic_batching {",
        *([f"  preferred_batch_size: {_dims(preferred)}"] if preferred else []),
        f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}",
        "}",
        "instance_group [",
        f"  {{ count: {int(instances)} kind: {'KIND_GPU' if target == 'cluster' else 'KIND_CPU'} }}",
        "]",
        "version_policy: { latest { num_versions: 1 } }",
    ]
    if target == "cluster" and tensorrt:
        body += [
            "optimization { execution_accelerators {",
            "  gpu_execution_accelerator : [ {",
            '    name : "tensorrt"',
            '    parameters { key: "precision_mode" value: "FP16" }',
            '    parameters { key: "max_workspace_size_bytes" value: "1073741824" }',
            "  } ]",
            "} }",
        ]
    # The transformer reads these back from GET /v2/models/<name>/config: one source of truth for its preprocessing.
    params = {"classes": ",".join(classes), "model_version": version, "resolution": str(resolution)}
    if target == "local":
        # The key Triton's own onnxruntime backend uses for the same setting.
        params["intra_op_thread_count"] = str(int(ort_threads))
        params["allow_spinning"] = "1" if ort_spinning else "0"
    if execution_env:
        params["EXECUTION_ENV_PATH"] = execution_env
    for k, v in params.items():
        body.append(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}')
    return "\n".join(head + body) + "\n"


# ---- the ensemble: image bytes in, probabilities and class names out, all inside Triton ------------------------
# What the preprocess and postprocess models import from tailsynth. The export copies these files beside their
# model.py (the python backend puts the version folder on the import path), so the repository carries the library's own
# decode, admission checks and records: the same code as the transformer's, not a second implementation.
# tests/serving/test_export.py checks that the copy imports on its own.
VENDORED_MODULES = ("__init__.py", "errors.py", "hashing.py", "predictions.py", "serve/__init__.py", "serve/images.py",
                    "serve/records.py")


def _params(params: dict) -> list[str]:
    return [f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()]


def _check_instances(**counts: int) -> None:
    bad = {k: v for k, v in counts.items() if v < 1}
    if bad:
        raise ConfigError(", ".join(f"{k} {v}" for k, v in bad.items()) + ": must be >= 1")


# Why the steps are batched (max_batch_size > 0 with dynamic batching), not max_batch_size 0: a python-backend model
# answers one execute() call at a time, and each call is a round trip to its stub process. Unbatched, every request
# pays two such round trips (preprocess, postprocess) beside the classifier's; batched, Triton hands the stub all
# requests that queued meanwhile in one call. Measured on 2 busy cores at concurrency 32: about 2x the ensemble's
# throughput (docs: serving/README.md, "Ensemble mode"). The python backend still passes every request as its own
# object, so admission (images, pixels per request) stays per request. The price: the input is [N, 1] (a batch of
# N image files), not the transformer's [N].
STEP_QUEUE_DELAY_US = 0  # as the local classifier: run whatever queued, never hold a lone request back


def _batched_head(name: str, max_batch_size: int) -> list[str]:
    if max_batch_size < 1:
        raise ConfigError(f"max_batch_size {max_batch_size}: must be >= 1")
    return [f'name: "{name}"', 'backend: "python"', f"max_batch_size: {int(max_batch_size)}",
            f"dynamic_batching {{ max_queue_delay_microseconds: {STEP_QUEUE_DELAY_US} }}"]


def preprocess_config(*, resolution: int, limits=None, instances: int = 2, jpeg_draft: bool = False,
                      max_batch_size: int = 32, execution_env: str | None = None) -> str:
    """config.pbtxt of the preprocess model: image files BYTES [N, 1] -> pixels uint8 [N, R, R, 3] and
    image_sha256 BYTES [N, 1], with the transformer's admission checks per request (the parameters: Limits).

    Its instances are the decode concurrency: two by default, so that one large request (decoded one at a time
    across instances, tailsynth/serve/triton_preprocess_model.py) never holds the only decoder."""
    from .serve.images import Limits

    _check_instances(preprocess_instances=instances)
    lim = limits or Limits(max_batch=max_batch_size)
    params = {"resolution": str(int(resolution)), "jpeg_draft": "1" if jpeg_draft else "0"}
    params.update({k: str(v) for k, v in lim.__dict__.items()})
    if execution_env:
        params["EXECUTION_ENV_PATH"] = execution_env
    lines = [*_batched_head(PREPROCESS_NAME, max_batch_size),
             "input [",
             f'  {{ name: "{INPUT_NAME}" data_type: TYPE_STRING dims: [ 1 ] }}',
             "]",
             "output [",
             f'  {{ name: "pixels" data_type: TYPE_UINT8 dims: {_dims([resolution, resolution, 3])} }},',
             '  { name: "image_sha256" data_type: TYPE_STRING dims: [ 1 ] }',
             "]",
             "instance_group [",
             f"  {{ count: {int(instances)} kind: KIND_CPU }}",
             "]",
             *_params(params)]
    return "\n".join(lines) + "\n"


def postprocess_config(*, classes: Sequence[str], resolution: int, feature_dim: int, version: str,
                       instances: int = 1, max_batch_size: int = 32, execution_env: str | None = None) -> str:
    """config.pbtxt of the postprocess model: probabilities, features, pixels, hashes -> class names and the
    request id per image; it writes the prediction records (tailsynth/serve/triton_postprocess_model.py)."""
    _check_instances(postprocess_instances=instances)
    params = {"classes": ",".join(classes), "model_version": version}
    if execution_env:
        params["EXECUTION_ENV_PATH"] = execution_env
    lines = [*_batched_head(POSTPROCESS_NAME, max_batch_size),
             "input [",
             f'  {{ name: "probabilities" data_type: TYPE_FP32 dims: {_dims([len(classes)])} }},',
             f'  {{ name: "features" data_type: TYPE_FP32 dims: {_dims([feature_dim])} }},',
             f'  {{ name: "pixels" data_type: TYPE_UINT8 dims: {_dims([resolution, resolution, 3])} }},',
             '  { name: "image_sha256" data_type: TYPE_STRING dims: [ 1 ] }',
             "]",
             "output [",
             '  { name: "class" data_type: TYPE_STRING dims: [ 1 ] },',
             '  { name: "request_id" data_type: TYPE_STRING dims: [ 1 ] }',
             "]",
             "instance_group [",
             f"  {{ count: {int(instances)} kind: KIND_CPU }}",
             "]",
             *_params(params)]
    return "\n".join(lines) + "\n"


def ensemble_config(*, classes: Sequence[str], resolution: int, version: str, max_batch_size: int = 32) -> str:
    """config.pbtxt of lesion-classifier-e2e: `image` BYTES [N, 1] (N image files) -> `probabilities` FP32 [N, C],
    `class` BYTES [N, 1], `request_id` BYTES [N, 1]: preprocess -> lesion-classifier -> postprocess, each step's
    dynamic batcher merging concurrent requests. N is at most max_batch_size, which must not exceed the
    classifier's (Triton checks it when loading)."""
    if max_batch_size < 1:
        raise ConfigError(f"max_batch_size {max_batch_size}: must be >= 1")
    steps = [
        (PREPROCESS_NAME, {INPUT_NAME: INPUT_NAME}, {"pixels": "pixels", "image_sha256": "image_sha256"}),
        (MODEL_NAME, {INPUT_NAME: "pixels"}, {"probabilities": "probabilities", "features": "features"}),
        (POSTPROCESS_NAME, {"probabilities": "probabilities", "features": "features", "pixels": "pixels",
                            "image_sha256": "image_sha256"}, {"class": "class", "request_id": "request_id"}),
    ]
    body = [f'name: "{ENSEMBLE_NAME}"', 'platform: "ensemble"', f"max_batch_size: {int(max_batch_size)}",
            "input [",
            f'  {{ name: "{INPUT_NAME}" data_type: TYPE_STRING dims: [ 1 ] }}',
            "]",
            "output [",
            f'  {{ name: "probabilities" data_type: TYPE_FP32 dims: {_dims([len(classes)])} }},',
            '  { name: "class" data_type: TYPE_STRING dims: [ 1 ] },',
            '  { name: "request_id" data_type: TYPE_STRING dims: [ 1 ] }',
            "]",
            "ensemble_scheduling {",
            "  step ["]
    for i, (model, inputs, outputs) in enumerate(steps):
        body.append(f'    {{ model_name: "{model}" model_version: -1')
        body += [f'      input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
        body += [f'      output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
        body.append("    }" + ("," if i < len(steps) - 1 else ""))
    body += ["  ]", "}"]
    # Read back by `tailsynth serve --mode ensemble` and by clients (GET /v2/models/lesion-classifier-e2e/config):
    # the class order of `probabilities`, and which model answered.
    body += _params({"classes": ",".join(classes), "model_version": version, "resolution": str(int(resolution))})
    return "\n".join(body) + "\n"


def _vendor_library(dst: Path) -> None:
    src = Path(__file__).parent
    for rel in VENDORED_MODULES:
        (dst / "tailsynth" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / "tailsynth" / rel)


def write_ensemble(out: str | Path, *, classes: Sequence[str], resolution: int, feature_dim: int, version: str,
                   triton_version: int = 1, preprocess_instances: int = 2, postprocess_instances: int = 1,
                   jpeg_draft: bool = False, limits=None, embedding: Path | None = None,
                   max_batch_size: int = 32) -> list[Path]:
    """The ensemble's three entries beside REPO/lesion-classifier: preprocess/, postprocess/ (python backend,
    model.py and the vendored library) and lesion-classifier-e2e/ (an empty version folder, as Triton wants)."""
    out = Path(out)
    serve_dir = Path(__file__).parent / "serve"
    written = []
    for name, source, cfg in (
            (PREPROCESS_NAME, "triton_preprocess_model.py",
             preprocess_config(resolution=resolution, limits=limits, instances=preprocess_instances,
                               jpeg_draft=jpeg_draft, max_batch_size=max_batch_size)),
            (POSTPROCESS_NAME, "triton_postprocess_model.py",
             postprocess_config(classes=classes, resolution=resolution, feature_dim=feature_dim, version=version,
                                instances=postprocess_instances, max_batch_size=max_batch_size))):
        mdir = out / name
        if mdir.exists():
            shutil.rmtree(mdir)
        vdir = mdir / str(int(triton_version))
        vdir.mkdir(parents=True)
        shutil.copy2(serve_dir / source, vdir / "model.py")
        _vendor_library(vdir)
        (mdir / "config.pbtxt").write_text(cfg)
        written.append(mdir)
    post = out / POSTPROCESS_NAME
    if embedding is not None and Path(embedding).is_file():
        shutil.copy2(embedding, post / "embedding.npz")
    edir = out / ENSEMBLE_NAME
    if edir.exists():
        shutil.rmtree(edir)
    (edir / str(int(triton_version))).mkdir(parents=True)
    (edir / "config.pbtxt").write_text(ensemble_config(classes=classes, resolution=resolution, version=version,
                                                       max_batch_size=max_batch_size))
    return written + [edir]


def _python_model_source() -> str:
    return (Path(__file__).parent / "serve" / "triton_python_model.py").read_text()


def export_model(model: str | Path, out: str | Path, target: str = "local", *, max_batch_size: int = 32,
                 preferred_batch_sizes: Sequence[int] | None = None, max_queue_delay_us: int | None = None,
                 instances: int = 1, tensorrt: bool = False, triton_version: int = 1,
                 parity_tolerance: float = PARITY_TOLERANCE, ort_threads: int = 0,
                 ort_spinning: bool = False, preprocess_instances: int = 2) -> dict:
    """MODEL_DIR -> Triton model repository at OUT (the repository root). Returns a summary incl. parity.

    Batching and thread settings: see triton_config (None = the target's default). Beside the model it writes
    the ensemble lesion-classifier-e2e (write_ensemble: image bytes in, decoded inside Triton), served by
    `tailsynth serve --mode ensemble`; preprocess_instances is its decode concurrency."""
    import torch

    from .classify.model import load_classifier

    if target not in TARGETS:
        raise ConfigError(f"--target {target!r}: expected one of {TARGETS}")
    model_dir = Path(model)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    net, meta = load_classifier(model_dir)
    version = model_version(model_dir)
    mdir = Path(out) / MODEL_NAME
    vdir = mdir / str(int(triton_version))
    if vdir.exists():
        shutil.rmtree(vdir)
    vdir.mkdir(parents=True)
    onnx_path = export_onnx(net, meta, vdir / "model.onnx")
    parity = check_parity(net, meta, onnx_path)
    try:
        _require_parity(parity, onnx_path, parity_tolerance)
    except Exception:
        shutil.rmtree(vdir)  # a graph that failed its check must not be left where a server would load it
        raise
    feature_dim = int(net.num_features)
    if target == "local":
        (vdir / "model.py").write_text(_python_model_source())
    (mdir / "config.pbtxt").write_text(triton_config(
        classes=meta.classes, resolution=int(meta.resolution), feature_dim=feature_dim, version=version,
        target=target, max_batch_size=max_batch_size, preferred_batch_sizes=preferred_batch_sizes,
        max_queue_delay_us=max_queue_delay_us, instances=instances, tensorrt=tensorrt, ort_threads=ort_threads,
        ort_spinning=ort_spinning))
    (mdir / "labels.txt").write_text("\n".join(meta.classes) + "\n")
    from .classify.folders import TrainedClassifier
    from .classify.provenance import model_lineage

    metrics = TrainedClassifier(model_dir).metrics()
    card = build_model_card(meta, version, parity, metrics, target, lineage=model_lineage(model_dir, meta),
                            feature_dim=feature_dim)
    write_card(mdir, card, model_card_sections(card))
    # The monitoring reference's projection of the features (tailsynth.monitor.records.Embedder) travels with the
    # model, so the transformer logs embeddings in the same low-dimensional space as the drift reference.
    proj = model_dir / "monitor" / "embedding.npz"
    if proj.is_file():
        shutil.copy2(proj, mdir / "embedding.npz")
    elif (mdir / "embedding.npz").exists():
        (mdir / "embedding.npz").unlink()
    serving = {"model_name": MODEL_NAME, "model_version": version, "classes": list(meta.classes),
               "resolution": int(meta.resolution), "input": INPUT_NAME, "outputs": list(OUTPUTS),
               "feature_dim": feature_dim, "triton_version": int(triton_version), "target": target,
               "embedding_projection": "embedding.npz" if proj.is_file() else None}
    serving["ensemble"] = ENSEMBLE_NAME
    (mdir / "serving.json").write_text(json.dumps(serving, indent=2) + "\n")
    write_ensemble(out, classes=meta.classes, resolution=int(meta.resolution), feature_dim=feature_dim,
                   version=version, triton_version=triton_version, preprocess_instances=preprocess_instances,
                   embedding=proj if proj.is_file() else None, max_batch_size=max_batch_size)
    from .serve.integrity import write_manifest

    write_manifest(out, version)  # last: it hashes every file written above
    return {"repository": str(Path(out)), "model_name": MODEL_NAME, "model_version": version, "target": target,
            "onnx": str(onnx_path), "parity": parity, "config": str(mdir / "config.pbtxt"),
            "ensemble": ENSEMBLE_NAME}


def reconfigure_repository(repo: str | Path, out: str | Path, **settings) -> Path:
    """A copy of an exported repository at OUT whose config.pbtxt has other Triton settings (triton_config's
    keyword arguments: batching, instances, onnxruntime threads; and preprocess_instances, the ensemble's decoder
    count), without exporting the model again.

    Files are hard-linked where the file system allows (model.onnx is the bulk), so variants cost no disk."""
    import os

    from .serve.integrity import verify_repository

    src, dst = Path(repo), Path(out)
    if (src / "repository.sha256.json").is_file():
        verify_repository(src)  # a copy vouches for its source's bytes only if they were checked
    info = json.loads((src / MODEL_NAME / "serving.json").read_text())
    if dst.exists():
        raise ConfigError(f"{dst}: exists; reconfigure_repository writes a new repository")

    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    pre_instances = settings.pop("preprocess_instances", None)
    for name in (MODEL_NAME, PREPROCESS_NAME, POSTPROCESS_NAME, ENSEMBLE_NAME):
        if (src / name).is_dir():  # the ensemble's entries travel along (repositories exported before: none)
            shutil.copytree(src / name, dst / name, copy_function=link_or_copy)
    cfg = dst / MODEL_NAME / "config.pbtxt"
    cfg.unlink()  # a hard link: writing in place would change the source repository too
    cfg.write_text(triton_config(classes=info["classes"], resolution=int(info["resolution"]),
                                 feature_dim=int(info["feature_dim"]), version=info["model_version"],
                                 target=info["target"], **settings))
    if (dst / ENSEMBLE_NAME).is_dir() and (pre_instances is not None or "max_batch_size" in settings):
        # The ensemble's steps follow the classifier's batch limit (Triton refuses an ensemble allowing more).
        mbs = int(settings.get("max_batch_size", 32))
        r, classes, version = int(info["resolution"]), info["classes"], info["model_version"]
        texts = {PREPROCESS_NAME: preprocess_config(resolution=r, max_batch_size=mbs,
                                                    instances=2 if pre_instances is None else int(pre_instances)),
                 POSTPROCESS_NAME: postprocess_config(classes=classes, resolution=r, version=version,
                                                      feature_dim=int(info["feature_dim"]), max_batch_size=mbs),
                 ENSEMBLE_NAME: ensemble_config(classes=classes, resolution=r, version=version, max_batch_size=mbs)}
        for name, text in texts.items():
            path = dst / name / "config.pbtxt"
            path.unlink()  # hard links, as above
            path.write_text(text)
    from .serve.integrity import write_manifest

    write_manifest(dst, info["model_version"])
    return dst
