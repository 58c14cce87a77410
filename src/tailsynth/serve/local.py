"""`tailsynth serve`: the local embedded endpoint on 127.0.0.1.

backend "triton": the real tritonserver binary (nvidia-pytriton) on the exported repository, then the KServe
transformer in this process in front of it. backend "onnxruntime": the transformer alone, running the ONNX model
in-process (for machines where that binary cannot run). Runs until SIGTERM/SIGINT, then stops Triton.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from .images import Limits
from .triton import PROJECT_ROOT

BACKENDS = ("triton", "onnxruntime")


def serving_dir() -> Path:
    return Path(os.environ.get("TAILSYNTH_SERVING_DIR", PROJECT_ROOT / "serving"))


def load_transformer_module():
    """serving/transformer.py (the KServe adapter lives beside the library, not inside it)."""
    path = serving_dir() / "transformer.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the transformer is missing (set TAILSYNTH_SERVING_DIR to the serving/ folder)")
    spec = importlib.util.spec_from_file_location("tailsynth_serving_transformer", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def serve(repo: str | Path, backend: str = "triton", port: int = 8080, token: str | None = None,
          records: str | Path | None = None, limits: Limits = Limits(), triton_port: int | None = None) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: expected one of {BACKENDS}")
    repo = Path(repo)
    if not (repo / "lesion-classifier" / "serving.json").is_file():
        raise FileNotFoundError(f"{repo}: no lesion-classifier model (run `tailsynth export --model MODEL_DIR --out {repo}`)")
    transformer = load_transformer_module()
    records = str(records) if records else str(repo / "predictions.jsonl")
    proj = repo / "lesion-classifier" / "embedding.npz"
    embedding = str(proj) if proj.is_file() else None
    if backend == "onnxruntime":
        transformer.run(backend="onnxruntime", repo=str(repo), port=port, token=token, records=records, limits=limits,
                        embedding=embedding)
        return
    cfg = (repo / "lesion-classifier" / "config.pbtxt").read_text()
    if 'backend: "python"' not in cfg:
        raise ValueError(f"{repo}: exported for the cluster (onnxruntime_onnx platform); the local Triton binary has "
                         "only the python backend: export with --target local, or serve with --backend onnxruntime")
    from .triton import start_triton

    tp = start_triton(repo, http_port=triton_port)
    print(f"triton ready on {tp.url} (log {tp.log_path})", file=sys.stderr, flush=True)
    try:
        transformer.run(backend="triton", predictor_host=f"127.0.0.1:{tp.http_port}", port=port, token=token,
                        records=records, limits=limits, embedding=embedding)
    finally:
        tp.stop()
