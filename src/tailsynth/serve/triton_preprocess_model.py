"""Triton python-backend model `preprocess`, the first step of the `lesion-classifier-e2e` ensemble.

BYTES image files (shape [N, 1]) -> uint8 N x R x R x 3 (`pixels`) and their SHA-256 (`image_sha256`), with the very
decode, resize and admission checks of the KServe transformer: `tailsynth.serve.images.open_batch` and
`decode_batch`. The export copies this file to REPO/preprocess/1/model.py and the few library modules it needs
beside it (REPO/preprocess/1/tailsynth/...; the python backend puts the version folder on the import path), so the
repository carries its own preprocessing and a Triton without tailsynth installed can serve it.

Triton's dynamic batcher may hand several requests to one execute() call; each is still its own request here
(the python backend does not merge them), so every request is admitted, refused or answered on its own.

Refusals: a BadInput becomes an INVALID_ARG error, which Triton answers with HTTP 400 and the message naming
the item (`image[3]: ...`, as the transformer does); a request above the heavy-request pixel threshold while another one is being
decoded becomes UNAVAILABLE (HTTP 503): as in the transformer's heavy lane, at most one large request is decoded
at a time across all instances of this model, so pixel bombs cannot occupy every instance.
"""

import fcntl
import hashlib
import json
import os
import tempfile

import numpy as np
import triton_python_backend_utils as pb_utils

from tailsynth.serve.images import BadInput, Limits, decode_batch, open_batch, sha256

INPUT = "image"  # the ensemble's input, so refusals name what the client sent


def _limits(params: dict) -> Limits:
    # Every field of Limits may be set as a model parameter (the export writes the defaults it was given).
    kw = {}
    for name, default in Limits().__dict__.items():
        if params.get(name):
            kw[name] = type(default)(params[name])
    return Limits(**kw)


class _HeavyLane:
    """One large decode at a time across this model's instances (separate processes): a non-blocking file lock."""

    def __init__(self, key: str):
        path = os.path.join(tempfile.gettempdir(), f"tailsynth-heavy-{key}.lock")
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        self.resolution = int(params["resolution"])
        self.limits = _limits(params)
        self.jpeg_draft = params.get("jpeg_draft", "0") == "1"
        # Keyed by the server process and repository: instances of one server share the lane, servers do not.
        key = hashlib.sha256(f"{os.getppid()}:{args['model_repository']}".encode()).hexdigest()[:16]
        self.heavy = _HeavyLane(key)

    def _one(self, request):
        arr = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy().reshape(-1)
        items = [(f"{INPUT}[{i}]", x if isinstance(x, bytes) else bytes(x)) for i, x in enumerate(arr)]
        opened, pixels = open_batch(items, self.limits)
        names = [n for n, _ in items]
        if pixels > self.limits.heavy_request_pixels:
            if not self.heavy.try_acquire():
                for im in opened:
                    im.close()
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"request of {pixels} pixels: a large request is already being decoded; retry shortly or "
                    "send smaller images", pb_utils.TritonError.UNAVAILABLE))
            try:
                images = decode_batch(opened, names, self.resolution, self.limits, self.jpeg_draft)
            finally:
                self.heavy.release()
        else:
            images = decode_batch(opened, names, self.resolution, self.limits, self.jpeg_draft)
        hashes = np.array([[sha256(b).encode()] for _, b in items], dtype=np.object_)  # [N, 1], as configured
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("pixels", images),
                                                          pb_utils.Tensor("image_sha256", hashes)])

    def execute(self, requests):
        responses = []
        for r in requests:
            try:
                responses.append(self._one(r))
            except BadInput as e:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)))
        return responses

    def finalize(self):
        os.close(self.heavy.fd)
