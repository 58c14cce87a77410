"""KServe transformer for the lesion classifier: image bytes in, class probabilities out.

It validates and decodes images, resizes them to the model resolution and sends a small **uint8** batch to the
predictor (Triton over v2 REST with binary tensors, or in-process onnxruntime as a fallback); the exported graph
normalises on its side. It writes one prediction record per image (hash, never bytes).

Accepted requests (model name `lesion-classifier`):
  v1  POST /v1/models/lesion-classifier:predict  {"instances": [{"image_bytes": {"b64": "..."}}, ...]}
  v2  POST /v2/models/lesion-classifier/infer    one BYTES input of shape [N] (binary extension: raw bytes;
                                                  JSON: base64 strings). kserve's own decoder breaks binary
                                                  BYTES, so a middleware rewrites them to base64 JSON first.
In the cluster:  python serving/transformer.py --predictor_host <triton-host:port> --host 0.0.0.0 --http_port 8080
Locally `tailsynth serve` runs it on 127.0.0.1 in front of the tritonserver binary from nvidia-pytriton.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import os
import uuid

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InferenceError, InvalidInput

from tailsynth.serve.backends import MODEL_NAME, OnnxRuntimeBackend, PredictorError, TritonHTTPBackend
from tailsynth.serve.images import BadInput, Limits, decode_image, image_stats, sha256
from tailsynth.serve.records import JsonlSink, Projection, prediction_record

log = logging.getLogger("tailsynth.transformer")


class LesionTransformer(Model):
    def __init__(self, name: str, backend, limits: Limits = Limits(), records: str | None = None,
                 embedding: str | None = None):
        super().__init__(name)
        self.backend = backend
        self.limits = limits
        self.sink = JsonlSink(records) if records else None
        # Without the monitoring projection, records carry no embedding (512 raw floats would not match the
        # drift reference's space).
        self.projection = Projection(embedding) if embedding else None
        self.info: dict = {}

    def load(self) -> bool:
        self.info = self.backend.load_info() if hasattr(self.backend, "load_info") else self.backend.describe()
        self.ready = True
        return self.ready

    # --- request parsing: every failure is a 400 naming the item at fault ---
    def _items_v1(self, payload: dict) -> list[tuple[str, bytes]]:
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

    def _items_v2(self, req: InferRequest) -> list[tuple[str, bytes]]:
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

    async def preprocess(self, payload: dict | InferRequest, headers: dict[str, str] = None) -> dict:
        # Decoding is CPU work: a worker thread keeps the event loop answering other requests meanwhile.
        return await asyncio.get_running_loop().run_in_executor(None, self._preprocess, payload, headers)

    def _preprocess(self, payload: dict | InferRequest, headers: dict[str, str] = None) -> dict:
        try:
            is_v2 = isinstance(payload, InferRequest)
            items = self._items_v2(payload) if is_v2 else self._items_v1(payload)
            if not items:
                raise BadInput("empty batch: send at least one image")
            if len(items) > self.limits.max_batch:
                raise BadInput(f"batch of {len(items)} images exceeds the limit of {self.limits.max_batch}")
            r = int(self.info["resolution"])
            images = np.stack([decode_image(b, r, name, self.limits) for name, b in items])
        except BadInput as e:
            raise InvalidInput(str(e)) from None
        rid = (headers or {}).get("x-request-id") or (payload.id if is_v2 and payload.id else None) or uuid.uuid4().hex
        return {"images": images, "hashes": [sha256(bytes(b)) for _, b in items], "v2": is_v2,
                "request_id": str(rid)}

    async def predict(self, payload: dict, headers: dict[str, str] = None) -> dict:
        try:
            probs, feats = await self.backend.predict(payload["images"])
        except PredictorError as e:
            raise InferenceError(str(e)) from None
        return {**payload, "probabilities": np.asarray(probs, np.float32), "features": np.asarray(feats, np.float32)}

    def postprocess(self, result: dict, headers: dict[str, str] = None):
        classes, version = self.info["classes"], self.info["model_version"]
        probs = result["probabilities"]
        top = [classes[i] for i in probs.argmax(1)]
        if self.sink is not None:
            emb = self.projection(result["features"]) if self.projection is not None else [None] * len(top)
            recs = [prediction_record(request_id=result["request_id"], image_sha256=h, predicted_class=c,
                                      probabilities=dict(zip(classes, p.tolist())), model_version=version,
                                      embedding=None if e is None else e.tolist(),
                                      image_stats=image_stats(img), item=i)
                    for i, (h, c, p, e, img) in enumerate(zip(result["hashes"], top, probs, emb, result["images"]))]
            try:
                self.sink.write(recs)
            except OSError as e:  # monitoring must not take the endpoint down
                log.error("could not write prediction records: %s", e)
        if not result["v2"]:
            return {"predictions": [{"class": c, "probabilities": dict(zip(classes, map(float, p))),
                                     "model_version": version} for c, p in zip(top, probs)]}
        out_p = InferOutput("probabilities", list(probs.shape), "FP32")
        out_p.set_data_from_numpy(probs, binary_data=False)
        out_c = InferOutput("class", [len(top)], "BYTES")
        out_c.set_data_from_numpy(np.array(top, dtype=np.object_), binary_data=False)
        return InferResponse(response_id=result["request_id"], model_name=self.name, infer_outputs=[out_p, out_c],
                             model_version=version, parameters={"classes": ",".join(classes)})


class LoopbackModelServer(ModelServer):
    """kserve's ModelServer with the REST listen address configurable (it hard-codes 0.0.0.0) and no gRPC."""

    def __init__(self, host: str = "127.0.0.1", **kw):
        kw.setdefault("enable_grpc", False)
        kw.setdefault("workers", 1)
        super().__init__(**kw)
        self.host = host

    def start(self, models) -> None:
        from kserve.model_server import FASTAPI_APP_IMPORT_STRING
        from kserve.protocol.rest.server import RESTServer

        self._register_and_check_atleast_one_model_is_ready(models)
        self._models = list(models)  # kserve's stop() unregisters them before the loop ends
        self._rest_server = RESTServer(FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                                       self.http_port, access_log_format=self.access_log_format, workers=1,
                                       grace_period=self.grace_period, event_loop=self.event_loop,
                                       timeout_keep_alive=self.timeout_keep_alive, ssl_certfile=self.ssl_certfile,
                                       ssl_keyfile=self.ssl_keyfile)
        self._rest_server.config.host = self.host
        self.servers.append(self._rest_server.start())
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())

    async def _serve(self):
        try:
            await asyncio.gather(*self.servers)
        finally:
            # Close predictor connections in this loop: an open keep-alive connection delays Triton's shutdown.
            for model in self._models:
                close = getattr(getattr(model, "backend", None), "close", None)
                if close is not None:
                    await close()

    def stop(self, sig: int):
        # The single-process uvicorn server handles SIGTERM itself; kserve's stop() would only unload models.
        if self._rest_server is not None:
            self._rest_server._server.should_exit = True
        super().stop(sig)


def make_backend(backend: str, repo: str | None = None, predictor_host: str | None = None, threads: int = 0):
    if backend == "onnxruntime":
        if not repo:
            raise ValueError("--backend onnxruntime needs --repo (the exported model repository)")
        return OnnxRuntimeBackend(repo, threads=threads)
    if backend == "triton":
        if not predictor_host:
            raise ValueError("--backend triton needs --predictor_host (host:port of Triton's HTTP endpoint)")
        url = predictor_host if "://" in predictor_host else f"http://{predictor_host}"
        return TritonHTTPBackend(url)
    raise ValueError(f"--backend {backend!r}: expected triton or onnxruntime")


def run(*, backend: str = "triton", repo: str | None = None, predictor_host: str | None = None,
        host: str = "127.0.0.1", port: int = 8080, token: str | None = None, records: str | None = None,
        limits: Limits = Limits(), model_name: str = MODEL_NAME, embedding: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    from kserve.model_server import app

    from tailsynth.serve.guard import GuardMiddleware, V2BinaryBytesAdapter

    model = LesionTransformer(model_name, make_backend(backend, repo, predictor_host), limits, records, embedding)
    model.load()
    # Added last = outermost: auth and the size limit run before the binary BYTES rewrite buffers anything.
    app.add_middleware(V2BinaryBytesAdapter)
    app.add_middleware(GuardMiddleware, token=token, max_body_bytes=limits.max_body_bytes)
    LoopbackModelServer(host=host, http_port=port, enable_docs_url=False).start([model])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="tailsynth lesion-classifier transformer (KServe)")
    p.add_argument("--model_name", default=MODEL_NAME)
    p.add_argument("--backend", choices=["triton", "onnxruntime"], default="triton")
    p.add_argument("--predictor_host", default=None, help="Triton HTTP host:port (KServe sets this)")
    p.add_argument("--repo", default=None, help="model repository (onnxruntime backend)")
    p.add_argument("--host", default=os.environ.get("TAILSYNTH_BIND", "127.0.0.1"),
                   help="listen address; 127.0.0.1 unless inside a pod (0.0.0.0)")
    p.add_argument("--http_port", type=int, default=8080)
    p.add_argument("--records", default=os.environ.get("TAILSYNTH_RECORDS"), help="prediction records JSONL")
    p.add_argument("--max_batch", type=int, default=Limits.max_batch)
    p.add_argument("--max_body_bytes", type=int, default=Limits.max_body_bytes)
    p.add_argument("--max_image_bytes", type=int, default=Limits.max_image_bytes)
    p.add_argument("--max_pixels", type=int, default=Limits.max_pixels)
    p.add_argument("--embedding", default=os.environ.get("TAILSYNTH_EMBEDDING"),
                   help="monitoring projection (embedding.npz from the repository) for record embeddings")
    a, _ = p.parse_known_args(argv)  # KServe passes its own flags too (e.g. --predictor_protocol)
    return a


def main(argv=None) -> None:
    a = parse_args(argv)
    # The token comes from the environment (a Kubernetes Secret), never from the command line of a pod.
    token = os.environ.get("TAILSYNTH_TOKEN") or None
    limits = Limits(max_image_bytes=a.max_image_bytes, max_pixels=a.max_pixels, max_batch=a.max_batch,
                    max_body_bytes=a.max_body_bytes)
    run(backend=a.backend, repo=a.repo, predictor_host=a.predictor_host, host=a.host, port=a.http_port,
        token=token, records=a.records, limits=limits, model_name=a.model_name, embedding=a.embedding)


if __name__ == "__main__":
    main()
