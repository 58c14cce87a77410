"""Checks run against every local endpoint (onnxruntime fallback and Triton): same contract, same hardening."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

MODEL = "lesion-classifier"


def post(url: str, body: bytes, token: str | None, path: str = f"/v1/models/{MODEL}:predict",
         content_type: str = "application/json", headers: dict | None = None) -> tuple[int, dict]:
    from tailsynth.serve.client import request_json

    return request_json(url, path, body, token, content_type=content_type, headers=headers)


def v1_body(images: list[bytes]) -> bytes:
    return json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}} for b in images]}).encode()


def predict_v1(url, images, token):
    code, out = post(url, v1_body(images), token)
    assert code == 200, (code, out)
    return out["predictions"]


def local_top1(model, meta, images: list[bytes]) -> tuple[list[str], np.ndarray]:
    """The in-process reference: the serving library's decoding (JPEG draft included, as the endpoints by default),
    torch eager. That decoding against the training reader: tests/serving/test_images_records.py."""
    from tailsynth.classify.model import predict_arrays
    from tailsynth.serve.images import decode_image

    r = meta.resolution
    arr = np.stack([decode_image(b, r) for b in images])
    p = predict_arrays(model, meta, arr, precision="fp32")  # the served graph is fp32
    return [meta.classes[i] for i in p.argmax(1)], p


def assert_same_as_torch(server, torch_model, images: list[bytes]):
    model, meta = torch_model
    preds = predict_v1(server.url, images, server.token)
    assert len(preds) == len(images)
    want, p_ref = local_top1(model, meta, images)
    got = [x["class"] for x in preds]
    assert got == want
    p = np.array([[x["probabilities"][c] for c in meta.classes] for x in preds])
    assert np.abs(p - p_ref).max() < 1e-4
    assert all(x["model_version"] for x in preds)
    return preds


def assert_concurrent_answers_are_each_requests_own(server, torch_model, images: list[bytes], threads: int = 12):
    """Many requests at once (one to three images each, as the transformer may merge them into one predictor call):
    every answer holds exactly its own images' probabilities, in order."""
    from concurrent.futures import ThreadPoolExecutor

    model, meta = torch_model
    _, p_ref = local_top1(model, meta, images)
    jobs = [list(range(i, min(i + 1 + i % 3, len(images)))) for i in range(len(images))] * 3

    def one(idx):
        preds = predict_v1(server.url, [images[i] for i in idx], server.token)
        return idx, np.array([[x["probabilities"][c] for c in meta.classes] for x in preds])

    with ThreadPoolExecutor(threads) as ex:
        results = list(ex.map(one, jobs))
    for idx, p in results:
        assert p.shape == (len(idx), len(meta.classes))
        assert np.abs(p - p_ref[idx]).max() < 1e-4, idx


def jpeg(seed=0, size=64) -> bytes:
    from PIL import Image

    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid small PNG whose header claims a huge canvas (patched IHDR with a correct CRC)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def v2_request(url, token, datatype, shape, payload: bytes | list, binary=True, model: str = MODEL,
               headers: dict | None = None, request_id: str | None = None):
    """A raw v2 REST request (binary extension when binary=True)."""
    inp = {"name": "image", "datatype": datatype, "shape": shape}
    headers = dict(headers or {})
    extra = {"id": request_id} if request_id is not None else {}
    if binary:
        inp["parameters"] = {"binary_data_size": len(payload)}
        head = json.dumps({**extra, "inputs": [inp]}).encode()
        body = head + payload
        headers["Inference-Header-Content-Length"] = str(len(head))
        ctype = "application/octet-stream"
    else:
        inp["data"] = payload
        body = json.dumps({**extra, "inputs": [inp]}).encode()
        ctype = "application/json"
    return post(url, body, token, path=f"/v2/models/{model}/infer", content_type=ctype, headers=headers)


def bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def bad_requests(good: bytes, max_body: int):
    """(label, callable(url, token) -> (code, body), expected status, words expected in the message)."""
    jp = jpeg(1)
    return [
        ("non-image bytes", lambda u, t: post(u, v1_body([b"%PDF-1.4 not an image" * 10]), t), 400, "not a decodable"),
        ("truncated JPEG", lambda u, t: post(u, v1_body([jp[: len(jp) // 2]]), t), 400, "truncated"),
        ("decompression bomb", lambda u, t: post(u, v1_body([bomb_png()]), t), 400, "decompression bomb"),
        ("empty image", lambda u, t: post(u, v1_body([b""]), t), 400, "empty image"),
        ("empty batch", lambda u, t: post(u, v1_body([]), t), 400, "empty batch"),
        ("oversize batch", lambda u, t: post(u, v1_body([good] * 33), t), 400, "exceeds the limit of 32"),
        ("oversize body", lambda u, t: post(u, b"{" + b" " * (max_body + 10) + b"}", t), 413, "exceeds the limit"),
        ("invalid JSON", lambda u, t: post(u, b'{"instances": [', t), 400, ""),
        ("not base64", lambda u, t: post(u, b'{"instances": [{"image_bytes": {"b64": "***"}}]}', t), 400, "base64"),
        ("wrong v1 shape", lambda u, t: post(u, b'{"instances": [[1, 2, 3]]}', t), 400, "image_bytes"),
        ("v2 wrong dtype", lambda u, t: v2_request(u, t, "FP32", [1, 32, 32, 3], np.zeros((1, 32, 32, 3), np.float32).tobytes()),
         400, "datatype FP32"),
        ("v2 wrong shape", lambda u, t: v2_request(u, t, "BYTES", [1, 1], bytes_tensor([good])), 400, "shape [1, 1]"),
        ("v2 empty batch", lambda u, t: v2_request(u, t, "BYTES", [0], b""), 400, "empty batch"),
        ("v2 JSON not base64", lambda u, t: v2_request(u, t, "BYTES", [1], ["@@@"], binary=False), 400, "base64"),
        ("no token", lambda u, t: post(u, v1_body([good]), None), 401, "bearer token"),
        ("wrong token", lambda u, t: post(u, v1_body([good]), "wrong"), 401, "bearer token"),
    ]


def assert_survives_bad_inputs(server, good: bytes, max_body: int):
    expected = predict_v1(server.url, [good], server.token)[0]["class"]
    failures = []
    for label, call, status, words in bad_requests(good, max_body):
        code, body = call(server.url, server.token)
        msg = json.dumps(body)
        if code != status or words.lower() not in msg.lower():
            failures.append(f"{label}: HTTP {code} {msg[:300]} (expected {status} with {words!r})")
        # The next good request still succeeds, with the same answer.
        after = predict_v1(server.url, [good], server.token)[0]["class"]
        if after != expected:
            failures.append(f"after {label}: prediction changed {expected} -> {after}")
    assert server.proc.poll() is None, "server died"
    assert not failures, "\n".join(failures)


def assert_v2_binary_matches_v1(server, images: list[bytes]):
    code, out = v2_request(server.url, server.token, "BYTES", [len(images)], bytes_tensor(images))
    assert code == 200, out
    outs = {o["name"]: o for o in out["outputs"]}
    probs = np.array(outs["probabilities"]["data"], np.float32).reshape(outs["probabilities"]["shape"])
    v1 = predict_v1(server.url, images, server.token)
    classes = out["parameters"]["classes"].split(",")
    p1 = np.array([[x["probabilities"][c] for c in classes] for x in v1])
    assert np.abs(probs - p1).max() < 1e-6
    assert outs["class"]["data"] == [x["class"] for x in v1]


def assert_records(path, images: list[bytes]):
    from tailsynth.serve.records import RECORD_FIELDS, read_records

    recs = read_records(path)
    hashes = {hashlib.sha256(b).hexdigest() for b in images}
    mine = [r for r in recs if r["image_hash"] in hashes]
    assert len({r["image_hash"] for r in mine}) == len(hashes)
    for r in mine:
        assert set(RECORD_FIELDS) <= set(r)
        assert len(r["embedding"]) == 5  # projected with the repository's embedding.npz
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
    raw = path.read_text()
    assert base64.b64encode(images[0]).decode()[:64] not in raw  # hashes only, never the bytes


def listen_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port`, from /proc/net/tcp{,6} (Linux)."""
    import ipaddress
    from pathlib import Path

    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            addr, p = parts[1].split(":")
            if parts[3] != "0A" or int(p, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            # /proc stores each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw)
            if ip.version == 6 and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            found.add(str(ip))
    return found


MAX_BODY = 4_000_000  # servers under test get a small body limit so the 413 path is cheap to hit


def tailsynth_bin() -> str:
    exe = Path(sys.executable).parent / "tailsynth"
    return str(exe) if exe.exists() else shutil.which("tailsynth")


# --- the ensemble mode: clients on Triton's own v2 endpoint (tailsynth serve --mode ensemble) ---

ENSEMBLE = "lesion-classifier-e2e"


def ensemble_infer(url, token, images: list[bytes], **kw) -> tuple[int, dict]:
    """Image files as one BYTES input `image` [N, 1] (a batch of N files) in the binary extension, straight to
    the ensemble."""
    return v2_request(url, token, "BYTES", [len(images), 1], bytes_tensor(images), model=ENSEMBLE, **kw)


def ensemble_outputs(body: dict) -> dict:
    return {o["name"]: o for o in body["outputs"]}


def ensemble_predict(url, token, images: list[bytes], **kw) -> tuple[np.ndarray, list[str], str]:
    """(probabilities N x C, top classes, request id) of one ensemble request that must succeed."""
    code, body = ensemble_infer(url, token, images, **kw)
    assert code == 200, (code, body)
    outs = ensemble_outputs(body)
    p = np.array(outs["probabilities"]["data"], np.float32).reshape(outs["probabilities"]["shape"])
    assert outs["class"]["shape"] == outs["request_id"]["shape"] == [len(images), 1], outs
    assert len(set(outs["request_id"]["data"])) == 1  # one request, one id on every row
    return p, list(outs["class"]["data"]), outs["request_id"]["data"][0]


def assert_ensemble_same_as_torch(server, torch_model, images: list[bytes]):
    model, meta = torch_model
    p, top, _ = ensemble_predict(server.url, server.token, images)
    want, p_ref = local_top1(model, meta, images)
    assert top == want
    assert np.abs(p - p_ref).max() < 1e-4


def assert_metadata_lists_io(url: str, token: str | None, model: str, inputs: dict, outputs: dict):
    """tritonclient.http: the v2 metadata and the model config name every input and output with its datatype and
    shape (INPUTS / OUTPUTS: name -> (datatype, shape) that must be among them)."""
    import tritonclient.http as th

    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = th.InferenceServerClient(url.removeprefix("http://"))
    try:
        meta = client.get_model_metadata(model, headers=headers)
        config = client.get_model_config(model, headers=headers)
    finally:
        client.close()
    for kind, want, cfg_key in (("inputs", inputs, "input"), ("outputs", outputs, "output")):
        got = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta[kind]}
        assert got and all(dt and shape for dt, shape in got.values()), (model, kind, meta)
        for name, (dt, shape) in want.items():
            assert got.get(name) == (dt, shape), (model, kind, got)
        names = {t["name"]: t for t in config[cfg_key]}
        assert set(names) == set(got), (model, cfg_key, config[cfg_key])
        assert all(t.get("data_type") and t.get("dims") for t in names.values()), (model, config[cfg_key])
    return meta, config


# Triton 2.51's HTTP frontend answers a body that is not JSON, or JSON without "inputs", with 500 before any
# model runs (parse errors are INTERNAL there; upstream: triton-inference-server/server#8762). Listed so that
# the checks below notice when a newer Triton fixes it; serving/README.md documents it.
TRITON_JSON_500 = ("invalid JSON", "JSON without inputs")


def ensemble_bad_requests(good: bytes):
    """The transformer's bad-input kinds (bad_requests) as they reach the ensemble: v2 BYTES only (Triton has no
    v1 API), Triton's restricted API answering 403 where the transformer answers 401."""
    jp = jpeg(1)

    def send(images, **kw):
        return lambda u, t: ensemble_infer(u, t, images, **kw)

    return [
        ("non-image bytes", send([b"%PDF-1.4 not an image" * 10]), 400, "image[0]: not a decodable"),
        ("truncated JPEG", send([jp[: len(jp) // 2]]), 400, "truncated"),
        ("decompression bomb", send([bomb_png()]), 400, "decompression bomb"),
        ("empty image", send([b""]), 400, "image[0]: empty image"),
        # Triton refuses these two itself, before the preprocess step, with its own wording.
        ("empty batch", lambda u, t: v2_request(u, t, "BYTES", [0, 1], b"", model=ENSEMBLE), 400, "string elements"),
        ("oversize batch", send([good] * 33), 400, "batch-size must be <= 32"),
        ("invalid JSON", lambda u, t: post(u, b'{"inputs": [', t, path=f"/v2/models/{ENSEMBLE}/infer"), 500,
         "failed to parse"),
        ("JSON without inputs", lambda u, t: post(u, b"{}", t, path=f"/v2/models/{ENSEMBLE}/infer"), 500, "inputs"),
        ("v2 wrong dtype", lambda u, t: v2_request(u, t, "FP32", [1, 32, 32, 3],
                                                    np.zeros((1, 32, 32, 3), np.float32).tobytes(), model=ENSEMBLE),
         400, "expects 'BYTES'"),
        ("v2 wrong shape", lambda u, t: v2_request(u, t, "BYTES", [1], bytes_tensor([good]), model=ENSEMBLE),
         400, "Expected [-1,1], got [1]"),
        ("v2 shape says more than sent", lambda u, t: v2_request(u, t, "BYTES", [2, 1], bytes_tensor([good]),
                                                                 model=ENSEMBLE), 400, "expected 2"),
        ("v2 truncated element", lambda u, t: v2_request(u, t, "BYTES", [1, 1], bytes_tensor([good])[:-10],
                                                         model=ENSEMBLE), 400, "incomplete"),
        ("v2 JSON text, not an image", lambda u, t: v2_request(u, t, "BYTES", [1, 1], ["@@@"], binary=False,
                                                               model=ENSEMBLE), 400, "not a decodable"),
        ("no token", lambda u, t: ensemble_infer(u, None, [good]), 403, "restricted"),
        ("wrong token", lambda u, t: ensemble_infer(u, "wrong", [good]), 403, "restricted"),
    ]


def assert_ensemble_survives_bad_inputs(server, good: bytes):
    _, (expected,), _ = ensemble_predict(server.url, server.token, [good])
    failures = []
    for label, call, status, words in ensemble_bad_requests(good):
        code, body = call(server.url, server.token)
        msg = json.dumps(body)
        if code != status or words.lower() not in msg.lower():
            failures.append(f"{label}: HTTP {code} {msg[:300]} (expected {status} with {words!r})")
        if code >= 500 and label not in TRITON_JSON_500:
            failures.append(f"{label}: server error {code}")
        _, (after,), _ = ensemble_predict(server.url, server.token, [good])
        if after != expected:
            failures.append(f"after {label}: prediction changed {expected} -> {after}")
    assert server.proc.poll() is None, "server died"
    assert "restart" not in server.log(), server.log()[-2000:]  # Triton itself never went down
    assert not failures, "\n".join(failures)
