"""Predictors behind the transformer: Triton over v2 REST (binary tensors) or in-process onnxruntime.

Both take a uint8 N x R x R x 3 batch and return (probabilities N x C, features N x D), and describe the model
(classes, resolution, version) from the repository the export wrote, so the transformer needs no other config.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np

from ..errors import MissingInputError

MODEL_NAME = "lesion-classifier"
# The ensemble that takes image files (tailsynth.export.write_ensemble, tailsynth.serve.ensemble) and its steps.
ENSEMBLE_NAME = "lesion-classifier-e2e"
PREPROCESS_NAME = "preprocess"
POSTPROCESS_NAME = "postprocess"


class PredictorError(RuntimeError):
    """The predictor failed on a request that passed validation (server side, 5xx)."""


def _model_dir(repo: str | Path) -> Path:
    d = Path(repo) / MODEL_NAME
    if not (d / "serving.json").is_file():
        raise MissingInputError(f"{d}/serving.json missing: {repo} is not a repository from `tailsynth export`")
    return d


def _latest_version_dir(mdir: Path) -> Path:
    versions = sorted((p for p in mdir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise MissingInputError(f"{mdir}: no numeric version folder with model.onnx")
    return versions[-1]


class OnnxRuntimeBackend:
    """The pure-Python fallback: the exported model.onnx run in this process."""

    name = "onnxruntime"

    def __init__(self, repo: str | Path, threads: int = 0):
        from ..onnx_session import cpu_session

        from .integrity import verify_repository

        mdir = _model_dir(repo)
        verify_repository(repo)  # each worker process checks the bytes it loads
        self.info = json.loads((mdir / "serving.json").read_text())
        path = _latest_version_dir(mdir) / "model.onnx"
        # No spinning: the transformer's decoding threads share these cores (see triton_python_model.py).
        self.session = cpu_session(path, threads, spinning=os.environ.get("TAILSYNTH_ORT_SPIN", "0") == "1")

    def describe(self) -> dict:
        return {k: self.info[k] for k in ("classes", "resolution", "model_version")}

    def predict_sync(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, f = self.session.run(["probabilities", "features"], {"image": batch})
        return p, f

    async def predict(self, batch: np.ndarray):
        # onnxruntime releases the GIL: a worker thread keeps the event loop free for other requests.
        return await asyncio.get_running_loop().run_in_executor(None, self.predict_sync, batch)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class TritonHTTPBackend:
    """Triton (local or in-cluster) over the v2 REST protocol with binary tensor data, via tritonclient.http.aio.

    (tritonclient.grpc cannot share a process with kserve: both register the same protobuf messages.)"""

    name = "triton"

    def __init__(self, url: str, model_name: str = MODEL_NAME, timeout_s: float = 60.0):
        self.url = url.removeprefix("http://").removeprefix("https://").rstrip("/")
        self.ssl = url.startswith("https://")
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._client = None
        self._info: dict | None = None

    def _c(self):
        if self._client is None:
            import tritonclient.http.aio as thaio

            self._client = thaio.InferenceServerClient(self.url, ssl=self.ssl, conn_timeout=self.timeout_s)
        return self._client

    def load_info(self, wait_s: float = 300.0) -> dict:
        """Classes, resolution and version from the model config's parameters (written by the export).

        Synchronous on purpose: it runs once in Model.load(), before the server's event loop exists. In a pod
        the predictor may still be loading: retry until `wait_s` has passed instead of crash-looping."""
        import time
        import urllib.request

        scheme = "https" if self.ssl else "http"
        url = f"{scheme}://{self.url}/v2/models/{self.model_name}/config"
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with urllib.request.urlopen(url, timeout=min(self.timeout_s, 10)) as r:
                    cfg = json.loads(r.read())
                break
            except Exception as e:
                if time.monotonic() > deadline:
                    raise PredictorError(f"cannot read the model config from {url}: {e}") from e
                time.sleep(2.0)
        params = {k: v.get("string_value") for k, v in (cfg.get("parameters") or {}).items()}
        missing = [k for k in ("classes", "resolution", "model_version") if not params.get(k)]
        if missing:
            raise PredictorError(f"Triton model {self.model_name} config lacks parameters {missing}: "
                                 "was the repository written by `tailsynth export`?")
        self._info = {"classes": params["classes"].split(","), "resolution": int(params["resolution"]),
                      "model_version": params["model_version"], "max_batch_size": int(cfg.get("max_batch_size") or 0)}
        return self._info

    def describe(self) -> dict:
        if self._info is None:
            raise PredictorError("call load_info() first")
        return dict(self._info)

    async def predict(self, batch: np.ndarray):
        import tritonclient.http as th

        inp = th.InferInput("image", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.uint8), binary_data=True)
        outs = [th.InferRequestedOutput("probabilities", binary_data=True),
                th.InferRequestedOutput("features", binary_data=True)]
        try:
            r = await self._c().infer(self.model_name, [inp], outputs=outs)
        except Exception as e:
            raise PredictorError(f"Triton at {self.url} failed: {e}") from e
        return r.as_numpy("probabilities"), r.as_numpy("features")

    async def ready(self) -> bool:
        try:
            return bool(await self._c().is_model_ready(self.model_name))
        except Exception:
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
