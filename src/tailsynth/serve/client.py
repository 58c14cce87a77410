"""Client for the transformer's v1 endpoint (`tailsynth predict`)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

MODEL_NAME = "lesion-classifier"


class PredictError(RuntimeError):
    pass


def request_json(url: str, path: str, body: bytes | None = None, token: str | None = None, method: str | None = None,
                 content_type: str = "application/json", headers: dict | None = None,
                 timeout: float = 60.0) -> tuple[int, dict]:
    """One HTTP exchange with an endpoint: (status, JSON body); an error status is returned, not raised, with a
    non-JSON body as {"error": text}. Network failures (refused, timed out) raise OSError."""
    h = {**({"Content-Type": content_type} if body is not None else {}), **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url.rstrip("/") + path, data=body, headers=h,
                                 method=method or ("POST" if body is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"error": raw.decode(errors="replace")}


def predict_bytes(url: str, images: Sequence[bytes], token: str | None = None, timeout: float = 60.0,
                  model_name: str = MODEL_NAME) -> list[dict]:
    body = json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}} for b in images]}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{url.rstrip('/')}/v1/models/{model_name}:predict", data=body, headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())["predictions"]
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise PredictError(f"{url}: HTTP {e.code}: {detail}") from None
    except urllib.error.URLError as e:
        raise PredictError(f"{url}: cannot reach the endpoint ({e.reason})") from None


def predict_files(url: str, paths: Sequence[str | Path], token: str | None = None, batch_size: int = 16,
                  timeout: float = 60.0) -> Iterator[dict]:
    """One dict per image: image (path), class, probabilities, model_version."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such image file")
    for i in range(0, len(paths), batch_size):
        chunk = paths[i : i + batch_size]
        try:
            preds = predict_bytes(url, [p.read_bytes() for p in chunk], token=token, timeout=timeout)
        except PredictError as e:
            import re

            # The server names the item (instances[k]); name the file instead.
            raise PredictError(re.sub(r"instances\[(\d+)\]", lambda m: str(chunk[int(m.group(1))]), str(e))) from None
        for p, pred in zip(chunk, preds):
            yield {"image": str(p), "class": pred["class"], "probabilities": pred["probabilities"],
                   "model_version": pred.get("model_version")}
