"""`tailsynth serve --mode ensemble`: clients talk to Triton's own v2 endpoint; no Python on the request path.

The ensemble `lesion-classifier-e2e` (written by `tailsynth export`) decodes, classifies and records inside Triton.
What the transformer does in Python for every request happens here as follows:

- **Auth**: Triton's restricted APIs (`--http-restricted-api`, `--grpc-restricted-protocol`): inference, metadata
  and model-config need `Authorization: Bearer <token>`; model-repository control, statistics, trace, logging and
  shared memory need the admin token, which is a random key known only to this process (for its model reloads)
  unless `--repository-control` gives one. Health and Prometheus metrics stay open for probes. A missing or
  wrong header gets 403 from Triton (the transformer answers 401). The check is Triton's C++ HTTP path, so it
  costs no Python per request, which a proxy in front would bring back (serving/README.md, "Ensemble mode").
- **Request ids**: the v2 request's `id`, else the `x-request-id` header (forwarded to the models as a request
  parameter), else a new one; the postprocess model puts it in every record and returns it as `request_id`.
- **Records**: the postprocess model writes one per image to TAILSYNTH_RECORDS (set here for Triton). A write
  that fails (a full disk) is rolled back and counted in the ledger beside the records (RECORDS.write-failures);
  this process polls the ledger and logs one line per burst of failures and one when writes succeed again.
- **Supervision**: as in transformer mode (TritonSupervisor), driven by a probe of each composing model every
  second; postprocess skips the records of a probe that carries the random key this process gives Triton's
  environment (TAILSYNTH_PROBE_KEY), so client requests always get their records.

The token reaches tritonserver on its command line (Triton reads it nowhere else), so other local users can read
it from /proc unless /proc is mounted with hidepid=2; the transformer mode keeps tokens in the environment.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import secrets
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MissingInputError
from .backends import ENSEMBLE_NAME, MODEL_NAME, POSTPROCESS_NAME, PREPROCESS_NAME

log = logging.getLogger("tailsynth.ensemble")

INFERENCE_APIS = "inference,metadata,model-config"
ADMIN_APIS = "model-repository,statistics,trace,logging,shared-memory"
MODELS = (PREPROCESS_NAME, MODEL_NAME, POSTPROCESS_NAME, ENSEMBLE_NAME)  # load order: the ensemble last
PROBE_PARAMETER = "tailsynth_probe"  # tailsynth/serve/triton_postprocess_model.py: a probe writes no record


def triton_args(token: str | None, admin_key: str) -> list[str]:
    """tritonserver flags of the ensemble mode: the restricted APIs and the forwarded request-id header."""
    if not admin_key:
        raise ConfigError("the ensemble mode needs an admin key for model-repository control")
    args = ["--http-header-forward-pattern=(?i)x-request-id"]
    groups = [(INFERENCE_APIS, token)] if token else []
    groups.append((ADMIN_APIS, admin_key))
    for apis, key in groups:
        # gRPC metadata keys are lower case, and Triton prefixes the gRPC one: clients send
        # `triton-grpc-protocol-authorization`. The HTTP header name is compared case-insensitively.
        args += [f"--http-restricted-api={apis}:Authorization=Bearer {key}",
                 f"--grpc-restricted-protocol={apis}:authorization=Bearer {key}"]
    return args


def read_config(repo: Path) -> dict:
    """Classes, resolution and version from the ensemble's config.pbtxt (the export writes them as parameters)."""
    import re

    path = repo / ENSEMBLE_NAME / "config.pbtxt"
    if not path.is_file():
        raise MissingInputError(f"{repo}: no {ENSEMBLE_NAME} ensemble; export the model again with this version "
                                f"of `tailsynth export` (it writes the ensemble beside {MODEL_NAME})")
    params = dict(re.findall(r'key: "([^"]+)" value: \{ string_value: "([^"]*)" \}', path.read_text()))
    return {"classes": params["classes"].split(","), "resolution": int(params["resolution"]),
            "model_version": params["model_version"]}


@functools.lru_cache(maxsize=2)
def _probe_png(side: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (128, 100, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _infer(url: str, model: str, inputs, headers: dict, timeout: float = 10.0, parameters: dict | None = None) -> dict:
    import tritonclient.http as th

    body, json_size = th.InferenceServerClient.generate_request_body(inputs, parameters=parameters)
    hdrs = {**headers, "Content-Type": "application/octet-stream"}
    if json_size is not None:
        hdrs["Inference-Header-Content-Length"] = str(json_size)
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data, hlen = r.read(), r.headers.get("Inference-Header-Content-Length")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{model}: HTTP {e.code} {e.read()[:300]!r}") from None
    return json.loads(data[: int(hlen)] if hlen else data)


def probe_models(url: str, info: dict, headers: dict, probe_key: str) -> None:
    """One small inference on each composing model (the postprocess one with the probe key: no record)."""
    import tritonclient.http as th

    r = int(info["resolution"])
    png = th.InferInput("image", [1, 1], "BYTES")
    png.set_data_from_numpy(np.array([[_probe_png()]], dtype=np.object_), binary_data=True)
    out = _infer(url, PREPROCESS_NAME, [png], headers)
    shape = next(o["shape"] for o in out["outputs"] if o["name"] == "pixels")
    if shape != [1, r, r, 3]:
        raise RuntimeError(f"{PREPROCESS_NAME}: probe answered pixels of shape {shape}")
    pix = th.InferInput("image", [1, r, r, 3], "UINT8")
    pix.set_data_from_numpy(np.full((1, r, r, 3), 128, np.uint8), binary_data=True)
    out = _infer(url, MODEL_NAME, [pix], headers)
    if next(o["shape"] for o in out["outputs"] if o["name"] == "probabilities")[0] != 1:
        raise RuntimeError(f"{MODEL_NAME}: probe answered no probabilities")
    n = len(info["classes"])
    one = []
    for name, dtype, arr in (("probabilities", "FP32", np.full((1, n), 1.0 / n, np.float32)),
                             ("features", "FP32", np.zeros((1, info["feature_dim"]), np.float32)),
                             ("pixels", "UINT8", np.full((1, r, r, 3), 128, np.uint8)),
                             ("image_sha256", "BYTES", np.array([[b"probe"]], dtype=np.object_))):
        t = th.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr, binary_data=True)
        one.append(t)
    _infer(url, POSTPROCESS_NAME, one, headers, parameters={PROBE_PARAMETER: probe_key})


async def watch_record_failures(watch, interval_s: float) -> None:
    """Log the postprocess model's record-write failures (bursts and recoveries) as the ledger shows them."""
    loop = asyncio.get_running_loop()
    while True:
        for level, line in await loop.run_in_executor(None, watch.poll):
            getattr(log, level)(line)
        await asyncio.sleep(interval_s)


def serve_ensemble(repo: Path, *, port: int, token: str | None, records: str, admin_token: str | None = None,
                   repository_control: bool = False, max_restarts: int = 3, probe_interval_s: float = 1.0) -> int:
    """Triton with the ensemble on 127.0.0.1:PORT until SIGTERM/SIGINT (0) or an unrecoverable Triton (1)."""
    from ..predictions import FailureLedger
    from .health import PredictorHealth
    from .records import LedgerWatch
    from .transformer import _log_to_stderr, check_auth_binding
    from .triton import TritonSupervisor

    _log_to_stderr()
    repo = Path(repo)
    info = read_config(repo)
    info["feature_dim"] = int(json.loads((repo / MODEL_NAME / "serving.json").read_text())["feature_dim"])
    check_auth_binding("127.0.0.1", token)
    if repository_control and not admin_token:
        raise ConfigError("--repository-control needs --admin-token (or TAILSYNTH_ADMIN_TOKEN)")
    # Without repository control nobody but this process (its reloads) holds the admin key.
    admin_key = admin_token if repository_control else secrets.token_hex(32)
    admin = {"Authorization": f"Bearer {admin_key}"}
    inference = {"Authorization": f"Bearer {token}"} if token else {}
    probe_key = secrets.token_hex(16)
    # The postprocess model counts its failed writes in this ledger (created here while there is space); the
    # watch turns it into lines of this process's log, which outlives Triton's temporary one.
    FailureLedger(records).open()
    watch = LedgerWatch(records)
    sup = TritonSupervisor(repo, http_port=port, max_restarts=max_restarts, model_name=ENSEMBLE_NAME,
                           reload_models=MODELS, admin_headers=admin, models=MODELS,
                           extra_args=triton_args(token, admin_key),
                           extra_env={"TAILSYNTH_RECORDS": records, "TAILSYNTH_PROBE_KEY": probe_key})
    print(f"ensemble {ENSEMBLE_NAME} ready on {sup.tp.url}/v2/models/{ENSEMBLE_NAME} (gRPC 127.0.0.1:"
          f"{sup.tp.grpc_port}, metrics 127.0.0.1:{sup.tp.metrics_port}; triton log {sup.tp.log_path})",
          file=sys.stderr, flush=True)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        code = 0

        def fatal(reason: str) -> None:
            nonlocal code
            code = 1
            log.error("stopping: %s", reason)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def probe():
            await loop.run_in_executor(None, probe_models, sup.tp.url, info, inference, probe_key)

        def recover(failures: int):
            return sup.recover(failures, stub_dead="is not healthy" in health.last_error)

        health = PredictorHealth(probe, interval_s=probe_interval_s, timeout_s=10.0, recover=recover,
                                 on_fatal=fatal)
        task = asyncio.create_task(health.run())
        watching = asyncio.create_task(watch_record_failures(watch, probe_interval_s))
        try:
            await stop.wait()
        finally:
            task.cancel()
            watching.cancel()
            for level, line in watch.poll():
                getattr(log, level)(line)
            closing = watch.summary()
            if closing:
                log.warning(closing)
        return code

    try:
        return asyncio.run(main())
    finally:
        sup.stop()
