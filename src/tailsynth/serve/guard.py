"""ASGI middleware in front of the transformer: roles, request limits and truthful health answers.

- Roles: inference paths need the inference token (when one is set); model-repository control (load/unload)
  is off unless enabled, and then needs the separate admin token: the inference token gets 403.
- Limits: request-header bytes (431), concurrent inference requests (503 + Retry-After), body size (413),
  and 405 for a wrong method on an inference path (kserve's router would answer 404).
- Health: readiness and model-ready answer from the predictor probe (tailsynth.serve.health), not from the
  transformer process alone. Health and metrics paths stay open so probes and Prometheus need no token.
"""

from __future__ import annotations

import hmac
import json
import logging
import re

from ..errors import ConfigError

log = logging.getLogger("tailsynth.guard")

OPEN_PATHS = ("/v2/health/ready", "/v2/health/live", "/v1/models", "/metrics", "/")
_INFER = re.compile(r"^/v1/models/[^/]+:(predict|explain)$|^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
_ADMIN = re.compile(r"^/v2/repository(/|$)|^/v1/models/[^/]+/(load|unload)$")
_CONFIG = re.compile(r"^/v2/models/([^/]+)(/versions/[^/]+)?/config$")
_MODEL_READY = re.compile(r"^/v2/models/([^/]+)(/versions/[^/]+)?/ready$|^/v1/models/([^/:]+)$")


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


def _reply(status: int, message: str | None, extra_headers: list | None = None, body: dict | None = None):
    body = json.dumps(body if body is not None else {"error": message}).encode()
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

def _token_matches(given: str, expected: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class GuardMiddleware:
    def __init__(self, app, token: str | None = None, max_body_bytes: int = 64 * 1024 * 1024,
                 admin_token: str | None = None, repository_control: bool = False,
                 max_header_bytes: int = 16 * 1024, max_inflight: int = 64, health=None,
                 model_name: str = "lesion-classifier", model_config=None):
        if repository_control and not admin_token:
            raise ConfigError("model-repository control needs an admin token (TAILSYNTH_ADMIN_TOKEN)")
        self.app = app
        self.token = token or None
        self.admin_token = admin_token or None
        self.repository_control = repository_control
        self.max_body_bytes = int(max_body_bytes)
        self.max_header_bytes = int(max_header_bytes)
        self.max_inflight = int(max_inflight)
        self.health = health
        self.model_name = model_name
        self.model_config = model_config  # a callable: the body of GET /v2/models/<name>/config (kserve has none)
        self.inflight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        raw = scope.get("headers", [])
        size = sum(len(k) + len(v) + 4 for k, v in raw)
        if size > self.max_header_bytes:
            log.info("%s %s: refused, %d header bytes", method, path[:200], size)
            return await _reply(431, f"request headers of {size} bytes exceed the limit of "
                                     f"{self.max_header_bytes} bytes")(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        if self.health is not None and method in ("GET", "HEAD"):
            answer = self._health_answer(path)
            if answer is not None:
                return await answer(send)
        is_infer, is_admin = bool(_INFER.match(path)), bool(_ADMIN.match(path))
        if (is_infer or is_admin) and method != "POST":
            return await _reply(405, f"{method} {path}: method not allowed, use POST", [(b"allow", b"POST")])(send)
        scheme, _, given = headers.get("authorization", "").partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""
        if is_admin:
            if not self.repository_control:
                return await _reply(403, f"{path}: model-repository control is disabled on this server "
                                         "(enable it with --repository-control and an admin token)")(send)
            if not _token_matches(given, self.admin_token):
                if given and _token_matches(given, self.token):
                    return await _reply(403, f"{path}: the inference token may not control the model "
                                             "repository; use the admin token")(send)
                return await _reply(401, f"{path}: missing or wrong admin bearer token",
                                    [(b"www-authenticate", b"Bearer")])(send)
        elif self.token and path not in OPEN_PATHS:
            if not (_token_matches(given, self.token) or _token_matches(given, self.admin_token)):
                return await _reply(401, f"{path}: missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                                    [(b"www-authenticate", b"Bearer")])(send)
        if self.model_config is not None and method == "GET":
            m = _CONFIG.match(path)
            if m and m.group(1) == self.model_name:  # after the token check: the config is not an open path
                return await _reply(200, None, body=self.model_config())(send)
        if not is_infer:
            return await self._with_body_limit(scope, receive, send, headers, path)
        if self.inflight >= self.max_inflight:
            await _drain(receive, self.max_body_bytes)
            log.info("%s: refused, %d requests in flight", path, self.inflight)
            return await _reply(503, f"{path}: server busy ({self.inflight} requests in flight, limit "
                                     f"{self.max_inflight}); retry shortly", [(b"retry-after", b"1")])(send)
        self.inflight += 1
        try:
            return await self._with_body_limit(scope, receive, send, headers, path)
        finally:
            self.inflight -= 1

    def _health_answer(self, path: str):
        h = self.health
        if path in ("/v2/health/live", "/"):
            return _reply(200, None, body={"live": True}) if h.live else _reply(503, h.reason())
        if path == "/v2/health/ready":
            return _reply(200, None, body={"ready": True}) if h.ready else _reply(503, h.reason())
        m = _MODEL_READY.match(path)
        if m:
            name = m.group(1) or m.group(3)
            if name != self.model_name:
                return None  # kserve answers 404 for a model it does not serve
            return (_reply(200, None, body={"name": name, "ready": True}) if h.ready
                    else _reply(503, h.reason(), body={"name": name, "ready": False, "error": h.reason()}))
        return None

    async def _with_body_limit(self, scope, receive, send, headers, path):
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
                    log.info("%s: client disconnected while sending the body", path)
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
