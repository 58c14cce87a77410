"""Triton python-backend model: runs the exported ONNX graph with onnxruntime.

Copied by `tailsynth export --target local` to REPO/lesion-classifier/<version>/model.py. It runs inside the
python-backend stub, in the Triton environment (.venv-triton: numpy < 2, onnxruntime), never in the main one.
The cluster repository serves the same model.onnx with Triton's onnxruntime backend instead.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        # The export writes both settings into config.pbtxt (tailsynth.export.triton_config); the environment
        # variables are for repositories exported before it did.
        threads = int(params.get("intra_op_thread_count") or os.environ.get("TAILSYNTH_ORT_THREADS", "0"))
        if threads:
            opts.intra_op_num_threads = threads
        # Spinning worker threads steal the CPU from the transformer and the other instances on a shared host
        # (measured: about 2x slower single-image latency on a busy 2-core machine).
        spin = params.get("allow_spinning") or os.environ.get("TAILSYNTH_ORT_SPIN", "0")
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        # The dynamic batcher hands over several requests: run them as one batch, then split the rows back.
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [len(a) for a in arrays]
        batch = np.ascontiguousarray(np.concatenate(arrays) if len(arrays) > 1 else arrays[0], dtype=np.uint8)
        outs = self.session.run(self.output_names, {self.input_name: batch})
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(o[start:start + n]))
                       for name, o in zip(self.output_names, outs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self):
        self.session = None
