"""The endpoint as a hostile client would try it: roles, pixel bombs, header floods, odd images, wrong methods.

Real `tailsynth serve --backend onnxruntime` processes on loopback ports, and, where the case applies to both,
the ensemble mode (`tailsynth serve --mode ensemble`, clients on Triton's own endpoint) through the `endpoint`
fixture; the Triton-specific faults (killed stub, killed server) are in test_triton_health.py.
"""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import pytest
import serving_checks as chk

from tailsynth.serve.images import BadInput, Limits, decode_image

MODEL = chk.MODEL


def bomb_1bit_png(side: int = 6300) -> bytes:
    """A genuine (not header-patched) 1-bit PNG: about 5 KB on the wire, `side`^2 pixels once decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png(img: np.ndarray, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format="PNG", **kw)
    return buf.getvalue()


def get(url: str, path: str, token: str | None = None, method: str = "GET") -> tuple[int, dict]:
    from tailsynth.serve.client import request_json

    return request_json(url, path, token=token, method=method, timeout=30)


class Endpoint:
    """One served mode behind one interface: image files in, (HTTP status, body) or the top classes out."""

    def __init__(self, server, mode: str):
        self.server, self.mode = server, mode
        self.url, self.token, self.port, self.records = server.url, server.token, server.port, server.records
        self.model = chk.ENSEMBLE if mode == "ensemble" else MODEL
        self.infer_paths = ([f"/v2/models/{chk.ENSEMBLE}/infer"] if mode == "ensemble"
                            else [f"/v1/models/{MODEL}:predict", f"/v2/models/{MODEL}/infer"])

    def send(self, images: list[bytes], headers: dict | None = None) -> tuple[int, dict]:
        if self.mode == "ensemble":
            return chk.ensemble_infer(self.url, self.token, images, headers=headers)
        return chk.post(self.url, chk.v1_body(images), self.token, headers=headers)

    def predict(self, images: list[bytes]) -> list[str]:
        code, body = self.send(images)
        assert code == 200, (code, body)
        if self.mode == "ensemble":
            return chk.ensemble_outputs(body)["class"]["data"]
        return [x["class"] for x in body["predictions"]]

    def alive(self) -> bool:
        return self.server.proc.poll() is None


@pytest.fixture(params=["transformer", "ensemble"])
def endpoint(request):
    """The transformer (onnxruntime backend, the cheap one) or the ensemble on the real Triton."""
    if request.param == "ensemble":
        return Endpoint(request.getfixturevalue("ensemble_server"), "ensemble")
    return Endpoint(request.getfixturevalue("ort_server"), "transformer")


# --- images (no server) ---

def test_sixteen_bit_grey_is_scaled_not_saturated():
    a16 = np.full((64, 64), 30000, np.uint16)
    got = decode_image(png(a16), 32, "x")
    assert got.shape == (32, 32, 3)
    assert abs(int(got.mean()) - round(30000 / 257)) <= 1  # 117, not the 255 a plain convert("RGB") gives


def test_palette_image_decodes_to_its_colours():
    from PIL import Image

    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :32] = (200, 30, 40)
    rgb[:, 32:] = (10, 150, 220)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    got = decode_image(png(pal), 32, "x")
    assert tuple(got[5, 5]) == (200, 30, 40) and tuple(got[5, 28]) == (10, 150, 220)


@pytest.mark.parametrize("size", [(1, 1), (27, 200)])
def test_images_below_the_minimum_side_are_refused(size):
    with pytest.raises(BadInput, match=rf"instances\[0\]: {size[0]}x{size[1]} pixels is too small .*28 px"):
        decode_image(png(np.zeros((size[1], size[0], 3), np.uint8)), 32, "instances[0]")


def test_float_images_are_refused():
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), np.float32)).save(buf, format="TIFF")
    with pytest.raises(BadInput, match="pixel mode F not accepted"):
        decode_image(buf.getvalue(), 32, "x")


def test_huge_images_are_reduced_while_decoding_and_still_right():
    rgb = np.zeros((3000, 3000, 3), np.uint8)
    rgb[:, :1500] = (250, 0, 0)
    got = decode_image(png(rgb), 32, "x", Limits(reduce_above_pixels=1_000_000))
    assert tuple(got[16, 4]) == (250, 0, 0) and tuple(got[16, 28]) == (0, 0, 0)


# --- roles ---

def test_repository_control_is_off_by_default(endpoint):
    for token in (endpoint.token, "wrong", None):
        code, body = chk.post(endpoint.url, b"{}", token, path=f"/v2/repository/models/{endpoint.model}/unload")
        # The transformer says it is disabled; Triton says the API is restricted (to a key only tailsynth holds).
        assert code == 403 and ("disabled" in body["error"] or "restricted" in body["error"]), body
    code, _ = chk.post(endpoint.url, b"{}", endpoint.token, path=f"/v2/repository/models/{endpoint.model}/load")
    assert code == 403
    endpoint.predict([chk.jpeg(0)])  # still serving


def test_repository_control_needs_the_admin_token(local_repo, tmp_path, server_cls):
    s = server_cls(local_repo, "onnxruntime", "infer-tok", tmp_path / "p.jsonl",
               extra=("--repository-control", "--admin-token", "admin-tok")).wait_ready()
    try:
        code, body = chk.post(s.url, b"{}", "infer-tok", path=f"/v2/repository/models/{MODEL}/unload")
        assert code == 403 and "inference token may not" in body["error"]
        code, _ = chk.post(s.url, b"{}", None, path=f"/v2/repository/models/{MODEL}/unload")
        assert code == 401
        chk.predict_v1(s.url, [chk.jpeg(0)], "infer-tok")  # the model is still there
        code, body = chk.post(s.url, b"{}", "admin-tok", path=f"/v2/repository/models/{MODEL}/unload")
        assert code == 200, body
    finally:
        s.stop()


def test_without_a_token_only_loopback_and_a_loud_warning(local_repo, tmp_path, server_cls):
    s = server_cls(local_repo, "onnxruntime", None, tmp_path / "p.jsonl").wait_ready()
    try:
        assert chk.listen_addresses(s.port) == {"127.0.0.1"}
        chk.predict_v1(s.url, [chk.jpeg(0)], None)
    finally:
        s.stop()
    assert "AUTHENTICATION IS OFF" in s.log()
    from tailsynth.serve.transformer import check_auth_binding

    with pytest.raises(ValueError, match="refusing to listen on 0.0.0.0 without an inference token"):
        check_auth_binding("0.0.0.0", None)


# --- methods, headers, request ids ---

def test_wrong_method_is_405(endpoint):
    for path in endpoint.infer_paths:
        code, body = get(endpoint.url, path, endpoint.token)
        assert code == 405, (path, code, body)
        if endpoint.mode == "transformer":
            assert "use POST" in body["error"]


def test_header_flood_is_refused_and_the_server_lives(endpoint):
    try:
        code, body = endpoint.send([chk.jpeg(0)], headers={"X-Padding": "a" * 20_000})
    except OSError:  # Triton's HTTP server (libevhtp) drops the connection at its header limit
        code, body = -1, {}
    if endpoint.mode == "transformer":
        assert code == 431 and "16384" in body["error"]
    else:
        assert code in (-1, 400, 431), (code, body)
    # A megabyte of header never reaches the application: the HTTP parser stops at its own bound.
    s = socket.create_connection(("127.0.0.1", endpoint.port), timeout=30)
    try:
        s.sendall(f"POST {endpoint.infer_paths[0]} HTTP/1.1\r\nHost: a\r\nX-Big: ".encode())
        try:
            for _ in range(64):
                s.sendall(b"b" * 16384)
        except OSError:
            pass  # the server closed the connection mid-header: refused
        s.settimeout(10)
        try:
            head = s.recv(200)
        except OSError:
            head = b""
    finally:
        s.close()
    assert not head or head.split(b" ")[1] in (b"400", b"413", b"431"), head
    endpoint.predict([chk.jpeg(0)])
    assert endpoint.alive()


def test_request_id_is_sanitized_and_bounded(endpoint):
    img = chk.jpeg(77)
    rid = "abc<script>" + "x" * 1000
    code, _ = endpoint.send([img], headers={"x-request-id": rid})
    assert code == 200
    import hashlib

    from tailsynth.serve.records import read_records

    h = hashlib.sha256(img).hexdigest()
    rec = [r for r in read_records(endpoint.records) if r["image_hash"] == h][-1]
    assert rec["request_id"].startswith("abcscriptxxx") and len(rec["request_id"]) == 128


# --- bounded work ---

def test_odd_images_through_the_endpoint(endpoint):
    from PIL import Image

    base = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pal = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    a16 = (np.random.default_rng(4).integers(0, 65536, (64, 64))).astype(np.uint16)
    assert len(endpoint.predict([png(pal), png(a16)])) == 2
    code, body = endpoint.send([png(np.zeros((1, 1, 3), np.uint8))])
    item = "image[0]" if endpoint.mode == "ensemble" else "instances[0]"
    assert code == 400 and f"{item}: 1x1 pixels is too small" in body["error"]


def test_pixel_bomb_batch_leaves_normal_requests_fast(endpoint):
    bomb = bomb_1bit_png()
    assert len(bomb) < 10_000
    good = chk.jpeg(5)
    endpoint.predict([good])  # warm
    # One request of 32 bombs (1.27 Gpx claimed in ~160 KB): refused from the headers alone.
    t0 = time.monotonic()
    code, body = endpoint.send([bomb] * 32)
    assert code == 400 and "over the limit" in body["error"], body
    assert time.monotonic() - t0 < 10
    # Twelve single-bomb requests in parallel (each under the per-request cap) and a normal one among them.
    results, lock = [], threading.Lock()

    def send_bomb():
        c, b = endpoint.send([bomb])
        with lock:
            results.append(c)

    threads = [threading.Thread(target=send_bomb) for _ in range(12)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    endpoint.predict([good])
    normal_s = time.monotonic() - t0
    for t in threads:
        t.join(120)
    assert normal_s < 2.0, f"normal request took {normal_s:.2f}s beside 12 pixel-bomb requests"
    assert sorted(set(results)) <= [200, 503] and 503 in results, results  # heavy lane full -> 503, never 500
    assert endpoint.alive()


def test_client_errors_log_one_line_and_no_traceback(ort_server):
    before = len(ort_server.log())
    code, _ = chk.post(ort_server.url, chk.v1_body([b"not an image at all"]), ort_server.token)
    assert code == 400
    # A client that goes away mid-body is not a server error.
    s = socket.create_connection(("127.0.0.1", ort_server.port), timeout=10)
    s.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ort_server.token}\r\n"
              "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"instances\": [".encode())
    time.sleep(0.3)
    s.close()
    chk.predict_v1(ort_server.url, [chk.jpeg(0)], ort_server.token)
    time.sleep(0.5)
    new = ort_server.log()[before:]
    assert "Traceback" not in new, new[-3000:]
    assert "not a decodable image" in new
    assert " 500" not in new, new[-3000:]


# --- the ensemble mode's configuration errors (no server) ---

def test_ensemble_mode_configuration_errors_are_named(local_repo, tmp_path):
    import shutil

    from tailsynth.serve.local import serve

    with pytest.raises(ValueError, match="--mode ensemble .* needs --backend triton"):
        serve(local_repo, backend="onnxruntime", mode="ensemble")
    with pytest.raises(ValueError, match="--mode 'proxy': expected one of"):
        serve(local_repo, mode="proxy")
    old = tmp_path / "old-repo"  # exported before the ensemble existed: only the model
    shutil.copytree(local_repo / MODEL, old / MODEL)
    # refused before anything starts: such an old export has no integrity manifest either
    with pytest.raises(FileNotFoundError, match="export the model again"):
        serve(old, backend="triton", mode="ensemble", records=str(tmp_path / "p.jsonl"))


def test_ensemble_triton_flags_restrict_every_api_but_health():
    from tailsynth.serve.ensemble import triton_args

    args = triton_args("tok", "adm")
    http = [a.split("=", 1)[1] for a in args if a.startswith("--http-restricted-api=")]
    assert http == ["inference,metadata,model-config:Authorization=Bearer tok",
                    "model-repository,statistics,trace,logging,shared-memory:Authorization=Bearer adm"]
    assert len([a for a in args if a.startswith("--grpc-restricted-protocol=")]) == 2
    assert not any("health" in a for a in args)  # probes need no token
    # Without an inference token (loopback only, said loudly) the admin APIs stay restricted.
    assert [a for a in triton_args(None, "adm") if "restricted" in a and "inference" in a] == []
    assert any("model-repository" in a for a in triton_args(None, "adm"))
    with pytest.raises(ValueError, match="admin key"):
        triton_args("tok", "")
