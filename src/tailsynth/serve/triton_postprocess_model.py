"""Triton python-backend model `postprocess`, the last step of the `lesion-classifier-e2e` ensemble.

Probabilities and features from `lesion-classifier`, the model input pixels and image hashes from `preprocess`
-> the top class name per image (`class`) and the request id (`request_id`); and, for every image, one prediction
record in the JSONL file at TAILSYNTH_RECORDS, built by `tailsynth.serve.records.build_records` as in the
transformer (hash and image statistics, never the image). Copied by the export to REPO/postprocess/1/model.py with
the library modules it needs beside it.

Request id: the v2 request's `id`, else the `x-request-id` header (Triton forwards it as a request parameter
when started with --http-header-forward-pattern, as `tailsynth serve --mode ensemble` does), else a new one;
sanitised as in the transformer. It is returned as the `request_id` output so the client can find its records.

A request with zero rows is the supervisor's health probe: it answers empty outputs and writes nothing (the
ensemble never sends one: `preprocess` refuses an empty batch with HTTP 400).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from tailsynth.serve.records import JsonlSink, Projection, build_records, new_request_id, sanitize_request_id

RECORDS_ENV = "TAILSYNTH_RECORDS"


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
        self.sink = JsonlSink(path)
        proj = os.path.join(args["model_repository"], "embedding.npz")
        self.projection = Projection(proj) if os.path.isfile(proj) else None

    def _request_id(self, request) -> str:
        rid = sanitize_request_id(request.request_id() or None)
        if rid is None:
            try:
                params = json.loads(request.parameters() or "{}")
            except ValueError:
                params = {}
            header = next((v for k, v in params.items() if k.lower() == "x-request-id"), None)
            rid = sanitize_request_id(header)
        return rid or new_request_id()

    def execute(self, requests):
        responses, records = [], []
        for r in requests:
            def get(name):
                return pb_utils.get_input_tensor_by_name(r, name).as_numpy()

            probs, feats, pixels = get("probabilities"), get("features"), get("pixels")
            hashes = [h.decode() if isinstance(h, bytes) else str(h) for h in get("image_sha256").reshape(-1)]
            rid = self._request_id(r)
            top = [self.classes[i] for i in probs.argmax(1)] if len(probs) else []
            records += build_records(rid, hashes, pixels, probs, feats, self.classes, self.version, self.projection)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("class", np.array([c.encode() for c in top], dtype=np.object_)),
                pb_utils.Tensor("request_id", np.array([rid.encode()], dtype=np.object_))]))
        if records:
            # One write for all requests of this call. A failed write is logged, as in the transformer:
            # monitoring must not take the endpoint down.
            try:
                self.sink.write(records)
            except OSError as e:
                pb_utils.Logger.log_error(f"postprocess: could not write prediction records: {e}")
        return responses

    def finalize(self):
        self.sink.close()
