"""KServe transformer for the lesion classifier: image bytes in, class probabilities out.

It validates and decodes images, resizes them to the model resolution and sends a small **uint8** batch to the
predictor (Triton over v2 REST with binary tensors, or in-process onnxruntime as a fallback); the exported graph
normalises on its side. It writes one prediction record per image (hash, never bytes).

Accepted requests (model name `lesion-classifier`):
  v1  POST /v1/models/lesion-classifier:predict  {"instances": [{"image_bytes": {"b64": "..."}}, ...]}
  v2  POST /v2/models/lesion-classifier/infer    one BYTES input of shape [N] (binary extension: raw bytes;
                                                  JSON: base64 strings). kserve's own decoder breaks binary
                                                  BYTES, so a middleware rewrites them to base64 JSON first.

Work per request is bounded before it is done: image sizes come from the headers, a request's total pixels are
capped, and requests above `Limits.heavy_request_pixels` go through one "heavy lane" (one decode at a time, a
short queue, 503 + Retry-After beyond it), so pixel bombs cannot starve ordinary requests.

kserve is imported only when a server is built (`run`, `transformer_class`): the library stays importable
without it. `serving/transformer.py` is the container entry point; `tailsynth serve` calls `run` in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import ipaddress
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ConfigError
from .backends import MODEL_NAME, OnnxRuntimeBackend, PredictorError, TritonHTTPBackend
from .coalesce import Coalescer
from .images import BadInput, Limits, decode_batch, open_batch, sha256
from .records import (
    JsonlSink,
    Projection,
    RecordWriteError,
    WriteFailureLog,
    build_records,
    new_request_id,
    sanitize_request_id,
)
from .tuning import Tuning
from .tuning import add_arguments as tuning_args
from .tuning import from_namespace as tuning_from

log = logging.getLogger("tailsynth.transformer")

MAX_HEADER_BYTES = 16 * 1024


class Overloaded(RuntimeError):
    """The server refuses new work for now (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def parse_v1(payload) -> list[tuple[str, bytes]]:
    """A v1 body -> [(item name, image bytes)]; every failure is a BadInput naming the item."""
    if isinstance(payload, (bytes, str)):  # a JSON body sent without a JSON content type
        try:
            payload = json.loads(payload)
        except ValueError:
            raise BadInput("v1 request: body is not JSON") from None
    if not isinstance(payload, dict) or "instances" not in payload:
        raise BadInput('v1 request: expected a JSON object {"instances": [{"image_bytes": {"b64": ...}}]}')
    inst = payload["instances"]
    if not isinstance(inst, list):
        raise BadInput('v1 request: "instances" must be a list')
    items = []
    for i, x in enumerate(inst):
        b64 = x.get("image_bytes", {}).get("b64") if isinstance(x, dict) and isinstance(x.get("image_bytes"), dict) else None
        if not isinstance(b64, str):
            raise BadInput(f'instances[{i}]: expected {{"image_bytes": {{"b64": "<base64 image>"}}}}')
        try:
            items.append((f"instances[{i}]", base64.b64decode(b64, validate=True)))
        except (binascii.Error, ValueError):
            raise BadInput(f"instances[{i}].image_bytes.b64: not valid base64") from None
    return items


def parse_v2(req) -> list[tuple[str, bytes]]:
    """A kserve InferRequest -> [(item name, image bytes)]."""
    if len(req.inputs) != 1:
        raise BadInput(f"v2 request: expected exactly one input (BYTES, shape [N]), got {len(req.inputs)}")
    inp = req.inputs[0]
    if inp.datatype != "BYTES":
        raise BadInput(f"v2 input {inp.name!r}: datatype {inp.datatype} not accepted, expected BYTES "
                       "(encoded image files, not decoded tensors)")
    if len(inp.shape) != 1:
        raise BadInput(f"v2 input {inp.name!r}: shape {list(inp.shape)} not accepted, expected [N]")
    try:
        arr = inp.as_numpy()
    except Exception as e:
        raise BadInput(f"v2 input {inp.name!r}: unreadable data ({e})") from None
    arr = arr.reshape(-1)
    if arr.size != int(inp.shape[0]):
        raise BadInput(f"v2 input {inp.name!r}: shape says {inp.shape[0]} items, data has {arr.size}")
    items = []
    for i, x in enumerate(arr):
        name = f"{inp.name}[{i}]"
        if isinstance(x, str):  # JSON mode carries base64 text
            try:
                x = base64.b64decode(x, validate=True)
            except (binascii.Error, ValueError):
                raise BadInput(f"{name}: JSON BYTES must be base64-encoded image files") from None
        items.append((name, x))
    return items


class TransformerCore:
    """Everything the KServe model does, without kserve: parse, bound, decode, predict, record."""

    def __init__(self, backend, limits: Limits = Limits(), records: str | None = None, embedding: str | None = None,
                 tuning: Tuning | None = None):
        self.backend = backend
        self.limits = limits
        self.tuning = tuning or Tuning()
        # ledger=True: failed writes are also counted beside the file, summed over every worker process.
        self.sink = JsonlSink(records, ledger=True) if records else None
        self.write_failures = WriteFailureLog(lambda level, message: getattr(log, level)(message))
        # Without the monitoring projection, records carry no embedding (512 raw floats would not match the
        # drift reference's space).
        self.projection = Projection(embedding) if embedding else None
        self.info: dict = {}
        self.health = None  # a PredictorHealth once the server runs
        self._light = ThreadPoolExecutor(max_workers=self.tuning.decode_threads, thread_name_prefix="decode")
        self._heavy = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode-heavy")
        self._heavy_lane: asyncio.Semaphore | None = None
        self._heavy_waiting = 0
        self._predict = None  # set by load(): the backend's predict, behind a Coalescer unless tuning.coalesce is 0

    def load(self) -> dict:
        self.info = self.backend.load_info() if hasattr(self.backend, "load_info") else self.backend.describe()
        self._predict = self.backend.predict
        if self.tuning.coalesce:
            # A merged batch must fit the predictor's own limit (Triton's max_batch_size from the model config).
            max_rows = int(self.info.get("max_batch_size") or self.limits.max_batch)
            self._predict = Coalescer(self._predict, max_rows, self.tuning.coalesce).predict
        return self.info

    async def probe(self) -> None:
        """One inference on a cached tiny input: the health probe (no record, no decoding)."""
        r = int(self.info["resolution"])
        probs, _ = await self.backend.predict(_probe_input(r))
        if np.asarray(probs).shape[0] != 1:
            raise PredictorError(f"probe returned {np.asarray(probs).shape} probabilities for one image")

    def _parse(self, payload, is_v2: bool, headers: dict | None) -> dict:
        items = parse_v2(payload) if is_v2 else parse_v1(payload)
        # Header reads only: the request's cost is known before any decoding.
        opened, pixels = open_batch(items, self.limits)
        rid = (sanitize_request_id((headers or {}).get("x-request-id"))
               or (sanitize_request_id(payload.id) if is_v2 and getattr(payload, "id", None) else None)
               or new_request_id())
        return {"names": [n for n, _ in items], "opened": opened, "pixels": pixels, "request_id": rid,
                "hashes": [sha256(bytes(b)) for _, b in items]}

    def _decode(self, parsed: dict) -> np.ndarray:
        opened, parsed["opened"] = parsed["opened"], []
        return decode_batch(opened, parsed["names"], int(self.info["resolution"]), self.limits,
                            self.tuning.jpeg_draft)

    def _parse_light(self, payload, is_v2: bool, headers: dict | None) -> tuple[dict, np.ndarray | None]:
        """Parse, and decode at once unless the request is heavy: one worker-thread hop for ordinary requests."""
        parsed = self._parse(payload, is_v2, headers)
        if parsed["pixels"] > self.limits.heavy_request_pixels:
            return parsed, None
        return parsed, self._decode(parsed)

    async def preprocess(self, payload, is_v2: bool, headers: dict | None = None) -> dict:
        # Decoding is CPU work: worker threads keep the event loop answering other requests meanwhile.
        loop = asyncio.get_running_loop()
        parsed, images = await loop.run_in_executor(self._light, self._parse_light, payload, is_v2, headers)
        if images is None:
            pixels = parsed["pixels"]
            try:
                if self._heavy_lane is None:
                    self._heavy_lane = asyncio.Semaphore(1)
                if self._heavy_waiting >= self.limits.max_heavy_queue:
                    raise Overloaded(f"request of {pixels} pixels: {self._heavy_waiting} large requests are already "
                                     "being decoded; retry shortly or send smaller images", retry_after_s=2)
                self._heavy_waiting += 1
                try:
                    async with self._heavy_lane:
                        images = await loop.run_in_executor(self._heavy, self._decode, parsed)
                finally:
                    self._heavy_waiting -= 1
            finally:
                for im in parsed["opened"]:  # refused before decoding
                    im.close()
        return {"images": images, "hashes": parsed["hashes"], "v2": is_v2, "request_id": parsed["request_id"]}

    async def predict(self, payload: dict) -> dict:
        try:
            probs, feats = await self._predict(payload["images"])
        except PredictorError as e:
            if self.health is not None:
                self.health.report_failure(str(e))
            raise
        return {**payload, "probabilities": np.asarray(probs, np.float32), "features": np.asarray(feats, np.float32)}

    def records(self, result: dict) -> list[str]:
        """Write one record per image; returns the predicted classes."""
        classes, version = self.info["classes"], self.info["model_version"]
        probs = result["probabilities"]
        top = [classes[i] for i in probs.argmax(1)]
        if self.sink is not None:
            recs = build_records(result["request_id"], result["hashes"], result["images"], probs,
                                 result["features"], classes, version, self.projection)
            try:
                self.sink.write(recs)
            except RecordWriteError as e:  # monitoring must not take the endpoint down; rolled back and counted
                self.write_failures.failed(e)
            else:
                self.write_failures.succeeded(self.sink.path)
        return top


@functools.cache
def record_metrics():
    """The Prometheus collector of the prediction-record counters on the server's /metrics (kserve serves the
    default registry there), registered once per process; `track(sink)` adds a sink to it. Counted per process:
    with --workers N each worker reports its own, and the ledger beside the records holds the sum."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class RecordMetrics:
        def __init__(self):
            self.cores: list[TransformerCore] = []

        def track(self, core: TransformerCore) -> None:
            if core.sink is not None:
                self.cores.append(core)

        def collect(self):
            def total(attr):
                return sum(getattr(c.sink.stats, attr) for c in self.cores)

            for name, attr, doc in (
                    ("tailsynth_records_written", "written_records", "prediction records written"),
                    ("tailsynth_record_write_failures", "failed_writes",
                     "record writes that failed (ENOSPC, EFBIG, EIO, ...) and were rolled back"),
                    ("tailsynth_records_dropped", "failed_records", "records lost to failed writes"),
                    ("tailsynth_record_torn_tails_closed", "torn_tails_closed",
                     "lines found without their newline (a crash, an older writer) and ended before a write")):
                yield CounterMetricFamily(name, doc, value=total(attr))
            yield GaugeMetricFamily("tailsynth_record_writes_failing",
                                    "1 during a burst of failed record writes (until 10 succeed in a row), else 0",
                                    value=float(any(c.write_failures.burst_writes for c in self.cores)))

    collector = RecordMetrics()
    REGISTRY.register(collector)
    return collector


def io_metadata(classes) -> tuple[list[dict], list[dict]]:
    """The v2 metadata of the endpoint's inputs and outputs (what a client sends and gets back, not the predictor's
    uint8 tensors), so `get_model_metadata` tells a client to send a BYTES `image` of encoded files."""
    inputs = [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    outputs = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes)]},
               {"name": "class", "datatype": "BYTES", "shape": [-1]}]
    return inputs, outputs


def model_config(name: str, info: dict) -> dict:
    """GET /v2/models/NAME/config of the transformer, in Triton's JSON form (kserve has no such route): the same
    inputs and outputs as the metadata, and the parameters the export writes into the predictor's config."""
    inputs, outputs = io_metadata(info["classes"])

    def tensor(t):
        return {"name": t["name"], "data_type": "TYPE_STRING" if t["datatype"] == "BYTES" else f"TYPE_{t['datatype']}",
                "dims": t["shape"]}

    return {"name": name, "platform": "tailsynth_transformer", "max_batch_size": 0,
            "input": [tensor(t) for t in inputs], "output": [tensor(t) for t in outputs],
            "parameters": {"classes": {"string_value": ",".join(info["classes"])},
                           "model_version": {"string_value": info["model_version"]},
                           "resolution": {"string_value": str(info["resolution"])}}}


@functools.lru_cache(maxsize=4)
def _probe_input(resolution: int) -> np.ndarray:
    return np.full((1, resolution, resolution, 3), 128, np.uint8)


@functools.cache
def transformer_class():
    """The kserve.Model subclass (built on first use, so importing this module does not import kserve)."""
    from kserve import InferOutput, InferRequest, InferResponse, Model
    from kserve.errors import InferenceError, InvalidInput

    class LesionTransformer(Model):
        def __init__(self, name: str, core: TransformerCore):
            super().__init__(name)
            self.core = core

        def load(self) -> bool:
            self.core.load()
            self.ready = True
            return self.ready

        def get_input_types(self) -> list[dict]:
            return io_metadata(self.core.info["classes"])[0]

        def get_output_types(self) -> list[dict]:
            return io_metadata(self.core.info["classes"])[1]

        async def preprocess(self, payload, headers: dict[str, str] = None) -> dict:
            try:
                return await self.core.preprocess(payload, isinstance(payload, InferRequest), headers)
            except BadInput as e:
                raise InvalidInput(str(e)) from None

        async def predict(self, payload: dict, headers: dict[str, str] = None) -> dict:
            try:
                return await self.core.predict(payload)
            except PredictorError as e:
                raise InferenceError(str(e)) from None

        def postprocess(self, result: dict, headers: dict[str, str] = None):
            core = self.core
            classes, version = core.info["classes"], core.info["model_version"]
            top = core.records(result)
            probs = result["probabilities"]
            if not result["v2"]:
                return {"predictions": [{"class": c, "probabilities": dict(zip(classes, map(float, p))),
                                         "model_version": version} for c, p in zip(top, probs)]}
            out_p = InferOutput("probabilities", list(probs.shape), "FP32")
            out_p.set_data_from_numpy(probs, binary_data=False)
            out_c = InferOutput("class", [len(top)], "BYTES")
            out_c.set_data_from_numpy(np.array(top, dtype=np.object_), binary_data=False)
            return InferResponse(response_id=result["request_id"], model_name=self.name,
                                 infer_outputs=[out_p, out_c], model_version=version,
                                 parameters={"classes": ",".join(classes)})

    return LesionTransformer


def _quiet_handlers(app) -> None:
    """Client errors log one line at INFO (kserve logs a full traceback at ERROR for each); a client that goes
    away mid-body is not a server error; Overloaded is a 503 with Retry-After."""
    from fastapi.responses import JSONResponse
    from kserve.errors import InferenceError, InvalidInput, ModelNotFound
    from starlette.requests import ClientDisconnect

    def client_error(status: int):
        async def handler(request, exc):
            log.info("%s %s -> %d: %s", request.method, request.url.path, status, str(exc)[:300])
            return JSONResponse(status_code=status, content={"error": str(exc)})
        return handler

    async def disconnected(request, exc):
        log.info("%s %s: client disconnected before the request was complete", request.method, request.url.path)
        return JSONResponse(status_code=499, content={"error": "client closed the request"})

    async def overloaded(request, exc):
        log.info("%s %s -> 503: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=503, content={"error": str(exc)},
                            headers={"Retry-After": str(exc.retry_after_s)})

    async def predictor_failed(request, exc):
        log.error("%s %s -> 500: %s", request.method, request.url.path, str(exc)[:500])
        return JSONResponse(status_code=500, content={"error": str(exc)})

    app.add_exception_handler(InvalidInput, client_error(400))
    app.add_exception_handler(ModelNotFound, client_error(404))
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(InferenceError, predictor_failed)


@functools.cache
def _rest_server_class():
    """kserve's RESTServer with quiet client errors, optional request logs, and serving on pre-bound sockets."""
    from kserve.protocol.rest.server import RESTServer

    class QuietRESTServer(RESTServer):
        request_logs = True

        def create_application(self):
            super().create_application()
            # After kserve's own handlers (create_application adds them last), so ours replace them for the same
            # exception types. The app is the module-level one create_application loads by import string.
            from kserve.model_server import app

            _quiet_handlers(app)

        def _add_middlewares(self, app):
            # kserve's only middleware here times each request and logs the timings (tailsynth.serve.tuning).
            # Overridden because kserve 0.21 has no public switch for it: create_application always calls this,
            # and ModelServer's enable_latency_logging only reaches the models.
            if self.request_logs:
                super()._add_middlewares(app)

        async def serve_on(self, sockets):
            # RESTServer.start() takes no sockets and run(sockets) runs its own event loop (uvicorn.Server.run),
            # so serving pre-bound sockets in the server's loop needs the uvicorn server kserve keeps privately.
            self.create_application()
            await self._server.serve(sockets=sockets)

        def request_exit(self) -> None:
            """Let the uvicorn server finish its requests and return (RESTServer has no public stop)."""
            self._server.should_exit = True

    return QuietRESTServer


def _configure_rest_server(server, host: str, tuning: Tuning) -> None:
    """Listen address, request logs and a bounded request head on a QuietRESTServer before it starts."""
    server.request_logs = tuning.request_logs
    cfg = server.config
    cfg.host = host  # RESTServer hard-codes 0.0.0.0
    if not tuning.request_logs:
        # As uvicorn does for access_log=False (its protocols log only when this logger has handlers).
        access = logging.getLogger("uvicorn.access")
        access.handlers, access.propagate = [], False
    # httptools buffers request heads of any size (200 MB were accepted); h11 stops at this many bytes.
    cfg.http = tuning.http_parser
    cfg.h11_max_incomplete_event_size = 4 * MAX_HEADER_BYTES


async def _close_backends(models) -> None:
    """Close predictor connections in the serving loop: an open keep-alive connection delays Triton's shutdown."""
    for model in models:
        close = getattr(getattr(getattr(model, "core", None), "backend", None), "close", None)
        if close is not None:
            await close()


@functools.cache
def server_class():
    """kserve's ModelServer with the REST listen address configurable (it hard-codes 0.0.0.0), no gRPC, a bounded
    request head (h11, 64 KB; the guard's 16 KB check answers 431 first), quiet client errors, and the predictor
    health probe running in the server's event loop."""
    from kserve import ModelServer
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING

    class LoopbackModelServer(ModelServer):
        def __init__(self, host: str = "127.0.0.1", health=None, tuning: Tuning | None = None, sockets=None, **kw):
            self.tuning = tuning or Tuning()
            kw.setdefault("enable_grpc", False)
            kw.setdefault("workers", 1)
            kw.setdefault("enable_latency_logging", self.tuning.request_logs)
            super().__init__(**kw)
            self.host = host
            self.health = health
            self.sockets = sockets  # pre-bound listening sockets (SO_REUSEPORT workers); None: bind host:port
            self.exit_code = 0
            self.rest_server = None  # the QuietRESTServer once started
            # kserve's stop() unregisters the models before the loop ends; kept here to close their backends.
            self.served_models = []

        def start(self, models) -> None:
            # kserve's start() builds its own RESTServer (bound to 0.0.0.0) and runs a gRPC server; the model
            # registration and readiness check is kserve's own (no public equivalent registers *and* starts).
            self._register_and_check_atleast_one_model_is_ready(models)
            self.served_models = list(models)
            rest = _rest_server_class()(FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                                        self.http_port, access_log_format=self.access_log_format, workers=1,
                                        grace_period=self.grace_period, event_loop=self.event_loop,
                                        timeout_keep_alive=self.timeout_keep_alive, ssl_certfile=self.ssl_certfile,
                                        ssl_keyfile=self.ssl_keyfile)
            _configure_rest_server(rest, self.host, self.tuning)
            self.rest_server = rest
            self.servers.append(rest.serve_on(self.sockets) if self.sockets else rest.start())
            self.setup_event_loop()
            self.register_signal_handler()
            if self.tuning.event_loop == "uvloop":
                import uvloop

                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    runner.run(self.serve_with_health())
            else:
                asyncio.run(self.serve_with_health())

        async def serve_with_health(self):
            """The servers and the predictor health probe in one loop; backends closed when serving ends."""
            probe = asyncio.create_task(self.health.run()) if self.health is not None else None
            try:
                await asyncio.gather(*self.servers)
            finally:
                if probe is not None:
                    probe.cancel()
                await _close_backends(self.served_models)

        def fatal(self, reason: str) -> None:
            """The predictor cannot be recovered: stop serving and exit non-zero."""
            self.exit_code = 1
            log.error("stopping: %s", reason)
            if self.rest_server is not None:
                self.rest_server.request_exit()

        def stop(self, sig: int):
            # The single-process uvicorn server handles SIGTERM itself; kserve's stop() would only unload models.
            if self.rest_server is not None:
                self.rest_server.request_exit()
            super().stop(sig)

    return LoopbackModelServer


def reuse_port_socket(host: str, port: int):
    """A listening TCP socket with SO_REUSEPORT: several transformer processes bind the same port and the kernel
    spreads new connections over them (Linux allows this only between sockets of the same user)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def make_backend(backend: str, repo: str | None = None, predictor_host: str | None = None, threads: int = 0):
    if backend == "onnxruntime":
        if not repo:
            raise ConfigError("--backend onnxruntime needs --repo (the exported model repository)")
        return OnnxRuntimeBackend(repo, threads=threads)
    if backend == "triton":
        if not predictor_host:
            raise ConfigError("--backend triton needs --predictor_host (host:port of Triton's HTTP endpoint)")
        url = predictor_host if "://" in predictor_host else f"http://{predictor_host}"
        return TritonHTTPBackend(url)
    raise ConfigError(f"--backend {backend!r}: expected triton or onnxruntime")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth_binding(host: str, token: str | None) -> None:
    """No token means no authentication: only allowed on a loopback address, and said loudly."""
    if token:
        return
    if not _is_loopback(host):
        raise ConfigError(f"refusing to listen on {host} without an inference token: set TAILSYNTH_TOKEN "
                         "(or --token), or bind 127.0.0.1")
    log.warning("AUTHENTICATION IS OFF: no inference token was given, so any process on this machine can call "
                "the endpoint; it listens on %s only. Pass --token (or TAILSYNTH_TOKEN) to require one.", host)


def _log_to_stderr() -> None:
    """kserve configures only its own loggers; ours (one line per refused request, health changes) go to stderr."""
    import sys

    root = logging.getLogger("tailsynth")
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.INFO)
        root.propagate = False


def run(*, backend: str = "triton", repo: str | None = None, predictor_host: str | None = None,
        host: str = "127.0.0.1", port: int = 8080, token: str | None = None, records: str | None = None,
        limits: Limits = Limits(), model_name: str = MODEL_NAME, embedding: str | None = None,
        admin_token: str | None = None, repository_control: bool = False, max_inflight: int = 64,
        max_header_bytes: int = MAX_HEADER_BYTES, recover: Callable[[int], bool | None] | None = None,
        probe_interval_s: float = 1.0, dead_after_s: float = 120.0, tuning: Tuning | None = None,
        reuse_port: bool = False, sock=None) -> int:
    """Serve until SIGTERM/SIGINT (returns 0) or until the predictor cannot be recovered (returns 1).

    reuse_port: listen with SO_REUSEPORT, beside other transformer processes on the same port; sock: such a
    socket, already listening (host and port are then its own)."""
    from kserve.model_server import app

    from .guard import GuardMiddleware, V2BinaryBytesAdapter
    from .health import PredictorHealth

    _log_to_stderr()
    check_auth_binding(host, token)
    tuning = tuning or Tuning()
    core = TransformerCore(make_backend(backend, repo, predictor_host), limits, records, embedding, tuning)
    record_metrics().track(core)
    model = transformer_class()(model_name, core)
    model.load()
    health = PredictorHealth(core.probe, interval_s=probe_interval_s, recover=recover, dead_after_s=dead_after_s)
    core.health = health
    if sock is None and reuse_port:
        sock = reuse_port_socket(host, port)
    sockets = [sock] if sock is not None else None
    server = server_class()(host=host, http_port=port, enable_docs_url=False, health=health, tuning=tuning,
                            sockets=sockets)
    health.on_fatal = server.fatal
    # Added last = outermost: roles, header and size limits run before the binary BYTES rewrite buffers anything.
    app.add_middleware(V2BinaryBytesAdapter)
    app.add_middleware(GuardMiddleware, token=token, max_body_bytes=limits.max_body_bytes, admin_token=admin_token,
                       repository_control=repository_control, max_header_bytes=max_header_bytes,
                       max_inflight=max_inflight, health=health, model_name=model_name,
                       model_config=lambda: model_config(model_name, core.info))
    server.start([model])
    return server.exit_code


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="tailsynth lesion-classifier transformer (KServe)")
    p.add_argument("--model_name", default=MODEL_NAME)
    p.add_argument("--backend", choices=["triton", "onnxruntime"], default="triton")
    p.add_argument("--predictor_host", default=None, help="Triton HTTP host:port (KServe sets this)")
    p.add_argument("--repo", default=None, help="model repository (onnxruntime backend)")
    p.add_argument("--host", default=os.environ.get("TAILSYNTH_BIND", "127.0.0.1"),
                   help="listen address; 127.0.0.1 unless inside a pod (0.0.0.0, which requires a token)")
    p.add_argument("--http_port", type=int, default=8080)
    p.add_argument("--records", default=os.environ.get("TAILSYNTH_RECORDS"), help="prediction records JSONL")
    p.add_argument("--max_batch", type=int, default=Limits.max_batch)
    p.add_argument("--max_body_bytes", type=int, default=Limits.max_body_bytes)
    p.add_argument("--max_image_bytes", type=int, default=Limits.max_image_bytes)
    p.add_argument("--max_pixels", type=int, default=Limits.max_pixels)
    p.add_argument("--max_request_pixels", type=int, default=Limits.max_request_pixels)
    p.add_argument("--max_inflight", type=int, default=64, help="concurrent inference requests before 503")
    p.add_argument("--repository_control", action="store_true",
                   help="allow model load/unload (needs TAILSYNTH_ADMIN_TOKEN; off by default)")
    p.add_argument("--embedding", default=os.environ.get("TAILSYNTH_EMBEDDING"),
                   help="monitoring projection (embedding.npz from the repository) for record embeddings")
    p.add_argument("--reuse_port", action="store_true",
                   help="listen with SO_REUSEPORT beside other transformer processes (tailsynth serve --workers)")
    tuning_args(p)
    a, _ = p.parse_known_args(argv)  # KServe passes its own flags too (e.g. --predictor_protocol)
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    # Tokens come from the environment (a Kubernetes Secret), never from the command line of a pod.
    limits = Limits(max_image_bytes=a.max_image_bytes, max_pixels=a.max_pixels, max_batch=a.max_batch,
                    max_body_bytes=a.max_body_bytes, max_request_pixels=a.max_request_pixels)
    return run(backend=a.backend, repo=a.repo, predictor_host=a.predictor_host, host=a.host, port=a.http_port,
               token=os.environ.get("TAILSYNTH_TOKEN") or None, records=a.records, limits=limits,
               model_name=a.model_name, embedding=a.embedding,
               admin_token=os.environ.get("TAILSYNTH_ADMIN_TOKEN") or None,
               repository_control=a.repository_control, max_inflight=a.max_inflight,
               tuning=tuning_from(a), reuse_port=a.reuse_port)


if __name__ == "__main__":  # the extra worker processes of `tailsynth serve --workers N`
    import sys

    sys.exit(main())
