"""ASGI middleware in front of the transformer: optional bearer token and a request body size limit.

Health and metrics paths stay open so Kubernetes probes and Prometheus need no token.
"""

from __future__ import annotations

import hmac
import json

OPEN_PATHS = ("/v2/health/ready", "/v2/health/live", "/v1/models", "/metrics", "/")


def _reply(status: int, message: str, extra_headers: list | None = None):
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += extra_headers or []

    async def send_reply(send):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return send_reply


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
                total += len(chunk)
                if total > self.max_body_bytes:
                    return await _reply(413, f"{path}: request body exceeds the limit of {self.max_body_bytes} bytes")(send)
                chunks.append(chunk)
                more = msg.get("more_body", False)
            body = b"".join(chunks)
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)
