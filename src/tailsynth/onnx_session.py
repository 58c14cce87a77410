"""One way to open an ONNX model on CPU for this project: onnxruntime without spinning worker threads."""

from __future__ import annotations

from pathlib import Path


def cpu_session(path: str | Path, threads: int | None = None, spinning: bool = False):
    """An onnxruntime CPU session of PATH with `threads` intra-op threads (None or 0: onnxruntime's default).

    Spinning is off by default: on a 2-core host the other work in the process (torch, image decoding, the event
    loop) needs the cores that idle spinning ORT threads would hold."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
