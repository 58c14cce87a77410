"""`tailsynth serve`: the local embedded endpoint on 127.0.0.1.

backend "triton": the real tritonserver binary (nvidia-pytriton) on the exported repository, supervised
(restarted when it dies, its model reloaded when its python-backend stub dies), then the KServe transformer in
this process in front of it. backend "onnxruntime": the transformer alone, running the ONNX model in-process
(for machines where that binary cannot run). Runs until SIGTERM/SIGINT, then stops Triton; returns non-zero
when the predictor cannot be recovered.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import ConfigError, MissingInputError
from .images import Limits

BACKENDS = ("triton", "onnxruntime")


def serve(repo: str | Path, backend: str = "triton", port: int = 8080, token: str | None = None,
          records: str | Path | None = None, limits: Limits = Limits(), triton_port: int | None = None,
          admin_token: str | None = None, repository_control: bool = False, max_inflight: int = 64,
          max_restarts: int | None = None) -> int:
    from . import transformer

    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: expected one of {BACKENDS}")
    repo = Path(repo)
    if not (repo / "lesion-classifier" / "serving.json").is_file():
        raise MissingInputError(f"{repo}: no lesion-classifier model (run `tailsynth export --model MODEL_DIR --out {repo}`)")
    records = str(records) if records else str(repo / "predictions.jsonl")
    proj = repo / "lesion-classifier" / "embedding.npz"
    common = dict(port=port, token=token, records=records, limits=limits,
                  embedding=str(proj) if proj.is_file() else None, admin_token=admin_token,
                  repository_control=repository_control, max_inflight=max_inflight)
    if backend == "onnxruntime":
        return transformer.run(backend="onnxruntime", repo=str(repo), **common)
    cfg = (repo / "lesion-classifier" / "config.pbtxt").read_text()
    if 'backend: "python"' not in cfg:
        raise ConfigError(f"{repo}: exported for the cluster (onnxruntime_onnx platform); the local Triton binary has "
                         "only the python backend: export with --target local, or serve with --backend onnxruntime")
    from .triton import TritonSupervisor

    if max_restarts is None:
        max_restarts = int(os.environ.get("TAILSYNTH_TRITON_MAX_RESTARTS", "3"))
    sup = TritonSupervisor(repo, http_port=triton_port, max_restarts=max_restarts)
    print(f"triton ready on {sup.tp.url} (log {sup.tp.log_path})", file=sys.stderr, flush=True)
    try:
        return transformer.run(backend="triton", predictor_host=f"127.0.0.1:{sup.tp.http_port}",
                               recover=sup.recover, **common)
    finally:
        sup.stop()
