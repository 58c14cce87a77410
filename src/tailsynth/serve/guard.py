"""ASGI middleware in front of the transformer: optional bearer token and a request body size limit.

Health and metrics paths stay open so Kubernetes probes and Prometheus need no token.
"""

from __future__ import annotations

import hmac
import json

OPEN_PATHS = ("/v2/health/ready", "/v2/health/live", "/v1/models", "/metrics", "/")


async def _drain(receive, cap: int) -> None:
    """Read and drop up to `cap` more body bytes, so a client still sending gets the 4xx instead of a reset."""
    seen = 0
    while seen <= cap:
        msg = await receive()
        if msg["type"] != "http.request":
            return
        seen += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return


def _reply(status: int, message: str, extra_headers: list | None = None):
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += extra_headers or []

    async def send_reply(send):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return send_reply



def _replay(body: bytes, receive):
    """An ASGI `receive` that hands the already-read body to the app once, then defers to the real one."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

class GuardMiddleware:
    def __init__(self, app, token: str | None = None, max_body_bytes: int = 64 * 1024 * 1024):
        self.app = app
        self.token = token or None
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token and path not in OPEN_PATHS:
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                return await _reply(401, f"{path}: missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                                    [(b"www-authenticate", b"Bearer")])(send)
        declared = headers.get("content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                return await _reply(400, f"{path}: invalid Content-Length {declared!r}")(send)
            if n > self.max_body_bytes:
                await _drain(receive, 2 * self.max_body_bytes)
                return await _reply(413, f"{path}: request body of {n} bytes exceeds the limit of "
                                         f"{self.max_body_bytes} bytes")(send)
            return await self.app(scope, receive, send)
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            # No declared length (chunked): read up to the limit, then replay the body to the app.
            chunks, total, more = [], 0, True
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return None
                chunk = msg.get("body", b"")
                more = msg.get("more_body", False)
                total += len(chunk)
                if total > self.max_body_bytes:
                    if more:
                        await _drain(receive, 2 * self.max_body_bytes)
                    return await _reply(413, f"{path}: request body exceeds the limit of {self.max_body_bytes} bytes")(send)
                chunks.append(chunk)
            body = b"".join(chunks)
            return await self.app(scope, _replay(body, receive), send)
        return await self.app(scope, receive, send)


class V2BinaryBytesAdapter:
    """Rewrite v2 requests that carry BYTES inputs in the binary extension into JSON with base64 strings.

    kserve 0.21's REST decoder turns binary BYTES into UTF-8 text and fails (HTTP 500) on image bytes, so binary
    BYTES never reach the model intact. The transformer reads JSON BYTES as base64, so after this rewrite both
    encodings work. Requests with any non-BYTES binary input pass through unchanged (and get a clear 400 later).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith("/infer"):
            return await self.app(scope, receive, send)
        raw_headers = scope.get("headers", [])
        hlen = next((v for k, v in raw_headers if k.lower() == b"inference-header-content-length"), None)
        if hlen is None:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        try:
            new_body = _binary_bytes_to_json(body, int(hlen))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            return await _reply(400, f"{scope['path']}: malformed v2 binary request ({e})")(send)
        if new_body is not None:
            body = new_body
            raw_headers = [(k, v) for k, v in raw_headers
                           if k.lower() not in (b"inference-header-content-length", b"content-length", b"content-type")]
            raw_headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            scope = {**scope, "headers": raw_headers}
        return await self.app(scope, _replay(body, receive), send)


def _binary_bytes_to_json(body: bytes, header_len: int) -> bytes | None:
    import base64
    import struct

    if header_len < 0 or header_len > len(body):
        raise ValueError(f"Inference-Header-Content-Length {header_len} outside the body of {len(body)} bytes")
    head = json.loads(body[:header_len])
    inputs = head.get("inputs")
    if not isinstance(inputs, list):
        raise ValueError('"inputs" must be a list')
    binary = [i for i in inputs if isinstance(i, dict) and "binary_data_size" in (i.get("parameters") or {})]
    if not binary or any(i.get("datatype") != "BYTES" for i in binary):
        return None
    pos = header_len
    for inp in inputs:
        params = inp.get("parameters") or {}
        if "binary_data_size" not in params:
            continue
        size = int(params.pop("binary_data_size"))
        blob, pos = body[pos : pos + size], pos + size
        if len(blob) != size:
            raise ValueError(f"input {inp.get('name')!r}: binary_data_size {size} exceeds the data sent")
        items, off = [], 0
        while off < len(blob):
            if off + 4 > len(blob):
                raise ValueError(f"input {inp.get('name')!r}: truncated BYTES element length")
            (n,) = struct.unpack_from("<I", blob, off)
            if off + 4 + n > len(blob):
                raise ValueError(f"input {inp.get('name')!r}: BYTES element of {n} bytes runs past the data")
            items.append(base64.b64encode(blob[off + 4 : off + 4 + n]).decode("ascii"))
            off += 4 + n
        inp["data"] = items
        if not params:
            inp.pop("parameters", None)
    head.pop("parameters", None) if not head.get("parameters") else None
    return json.dumps(head).encode()
