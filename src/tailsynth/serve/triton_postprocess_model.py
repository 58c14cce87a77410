"""Triton python-backend model `postprocess`, the last step of the `lesion-classifier-e2e` ensemble.

Probabilities and features from `lesion-classifier`, the model input pixels and image hashes from `preprocess`
-> the top class name per image (`class`, [N, 1]) and the request id (`request_id`, [N, 1]: the same id on every
row, since every output of a batched model has the batch dimension); and, for every image, one prediction
record in the JSONL file at TAILSYNTH_RECORDS, built by `tailsynth.serve.records.build_records` as in the
transformer (hash and image statistics, never the image). A failed write is rolled back, counted in the failure
ledger beside that file (read by `tailsynth serve --mode ensemble` into its log) and logged once per burst; the
request is still answered. Copied by the export to REPO/postprocess/1/model.py with
the library modules it needs beside it.

Request id: the v2 request's `id`, else the `x-request-id` header (Triton forwards it as a request parameter
when started with --http-header-forward-pattern, as `tailsynth serve --mode ensemble` does), else a new one;
sanitised as in the transformer. It is returned as the `request_id` output so the client can find its records.

The supervisor's health probe calls this model directly with the request parameter `tailsynth_probe` set to the
key in TAILSYNTH_PROBE_KEY (a random value `tailsynth serve` gives Triton's environment, unknown to clients): such
a request is answered and writes no record. Without that variable (a cluster Triton) nothing skips the records.
"""

import hmac
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from tailsynth.serve.records import (
    JsonlSink,
    Projection,
    RecordWriteError,
    WriteFailureLog,
    build_records,
    new_request_id,
    sanitize_request_id,
)

RECORDS_ENV = "TAILSYNTH_RECORDS"
PROBE_KEY_ENV = "TAILSYNTH_PROBE_KEY"
PROBE_PARAMETER = "tailsynth_probe"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        self.classes = params["classes"].split(",")
        self.version = params["model_version"]
        path = os.environ.get(RECORDS_ENV) or params.get("records")
        if not path:
            # Refusing to load is the point: an ensemble that cannot record would serve without records.
            raise pb_utils.TritonModelException(
                f"postprocess: no prediction-record file: set {RECORDS_ENV} in Triton's environment "
                "(tailsynth serve does) or the model parameter 'records'")
        # Triton's log is a temporary file, gone when the server stops: failed writes are also counted in the
        # ledger beside the records, which `tailsynth serve --mode ensemble` reads into its own log.
        self.sink = JsonlSink(path, ledger=True)
        self.write_failures = WriteFailureLog(self._log)
        proj = os.path.join(args["model_repository"], "embedding.npz")
        self.projection = Projection(proj) if os.path.isfile(proj) else None
        self.probe_key = os.environ.get(PROBE_KEY_ENV) or None

    @staticmethod
    def _parameters(request) -> dict:
        try:
            params = json.loads(request.parameters() or "{}")
        except ValueError:
            params = {}
        return params if isinstance(params, dict) else {}

    def _request_id(self, request, params: dict) -> str:
        rid = sanitize_request_id(request.request_id() or None)
        if rid is None:
            header = next((v for k, v in params.items() if k.lower() == "x-request-id"), None)
            rid = sanitize_request_id(header)
        return rid or new_request_id()

    def _is_probe(self, params: dict) -> bool:
        given = params.get(PROBE_PARAMETER)
        return bool(self.probe_key) and isinstance(given, str) and hmac.compare_digest(given, self.probe_key)

    def execute(self, requests):
        responses, records = [], []
        for r in requests:
            def get(name):
                return pb_utils.get_input_tensor_by_name(r, name).as_numpy()

            probs, feats, pixels = get("probabilities"), get("features"), get("pixels")
            hashes = [h.decode() if isinstance(h, bytes) else str(h) for h in get("image_sha256").reshape(-1)]
            params = self._parameters(r)
            rid = self._request_id(r, params)
            top = [self.classes[i] for i in probs.argmax(1)]
            if not self._is_probe(params):
                records += build_records(rid, hashes, pixels, probs, feats, self.classes, self.version,
                                         self.projection)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("class", np.array([[c.encode()] for c in top], dtype=np.object_)),
                pb_utils.Tensor("request_id", np.array([[rid.encode()]] * len(top), dtype=np.object_))]))
        if records:
            # One write for all requests of this call. A failed write is logged, as in the transformer:
            # monitoring must not take the endpoint down.
            try:
                self.sink.write(records)
            except RecordWriteError as e:  # rolled back and counted by the sink
                self.write_failures.failed(e)
            else:
                self.write_failures.succeeded(self.sink.path)
        return responses

    @staticmethod
    def _log(level: str, message: str) -> None:
        logger = pb_utils.Logger
        (logger.log_error if level == "error" else logger.log_warn)(f"postprocess: {message}")

    def finalize(self):
        self.sink.close()
