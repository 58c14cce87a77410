"""Prediction logs for monitoring: per-image hashes, S3 sink, reading logs from files, folders or S3 prefixes, and
the flat table the drift tests use. The record's schema, the image statistics, the local sink and the embedding
projection are `tailsynth.predictions`."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..hashing import model_version  # noqa: F401  (part of this module's API)
from ..predictions import (
    IMAGE_STAT_COLUMNS,
    JsonlSink,
    RecordLog,
    ledger_path,
    parse_jsonl,
    read_jsonl,
    read_ledger,
)

REFERENCE_FILE = "reference.jsonl"

# ---- per-image facts ---------------------------------------------------------------------------------
def image_hash(data: bytes | np.ndarray) -> str:
    """SHA-256 of the encoded bytes as received, or of a decoded array (shape-prefixed)."""
    h = hashlib.sha256()
    if isinstance(data, np.ndarray):
        h.update(str(data.shape).encode())
        h.update(np.ascontiguousarray(data).tobytes())
    else:
        h.update(data)
    return h.hexdigest()


# ---- sinks ------------------------------------------------------------------------------------------
def s3_client(endpoint_url: str | None = None):
    """boto3 S3 client; the endpoint comes from the argument or $AWS_ENDPOINT_URL_S3 / $S3_ENDPOINT_URL."""
    import os

    import boto3

    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("S3_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint_url)


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ConfigError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ConfigError(f"{uri}: no bucket name")
    return bucket, key


class S3Sink:
    """Writes each batch of records as one JSONL object under s3://bucket/prefix/YYYY/MM/DD/HH/.

    One object per batch (never appends, which S3 cannot do) keeps writers independent and lets the
    monitor list a time window by key prefix.
    """

    def __init__(self, uri: str, client=None, endpoint_url: str | None = None):
        self.bucket, prefix = split_s3_uri(uri)
        self.prefix = prefix.strip("/")
        self.client = client or s3_client(endpoint_url)

    def write(self, records: Iterable[dict]) -> int:
        records = list(records)
        if not records:
            return 0
        now = datetime.now(UTC)
        key = "/".join(p for p in (self.prefix, now.strftime("%Y/%m/%d/%H"),
                                   f"{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.jsonl") if p)
        body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson")
        self.last_key = key
        return len(records)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def open_sink(uri: str | Path, endpoint_url: str | None = None):
    uri = str(uri)
    return S3Sink(uri, endpoint_url=endpoint_url) if uri.startswith("s3://") else JsonlSink(uri)


def read_records(uri: str | Path, endpoint_url: str | None = None) -> RecordLog:
    """Records from a JSONL file, a folder of *.jsonl files, or an s3:// prefix (all objects below it).

    Torn lines (not valid JSON) are skipped and listed in the result's `.skipped`; schema errors raise."""
    uri = str(uri)
    out = RecordLog()
    if uri.startswith("s3://"):
        client = s3_client(endpoint_url)
        bucket, prefix = split_s3_uri(uri)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in sorted(page.get("Contents", []), key=lambda o: o["Key"]):
                if obj["Key"].endswith(".jsonl"):
                    body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                    out.extend_log(parse_jsonl(body, f"s3://{bucket}/{obj['Key']}"))
        return out
    path = Path(uri)
    if path.is_dir():
        files = sorted(path.rglob("*.jsonl"))
        if not files:
            raise DataError(f"{path}: no *.jsonl prediction logs in this folder")
        for f in files:
            out.extend_log(read_jsonl(f))
        return out
    if not path.is_file():
        raise DataError(f"{path}: prediction log not found")
    return read_jsonl(path)


def write_failures(uri: str | Path) -> dict | None:
    """What the servers' failure ledgers beside a local log (file or folder) say: failed writes and dropped
    records summed over the ledgers found; None for S3 or when no ledger is there."""
    uri = str(uri)
    if uri.startswith("s3://"):
        return None
    path = Path(uri)
    logs = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    ledgers = [(f, led) for f in logs if (led := read_ledger(f)) is not None]
    if not ledgers:
        return None
    return {"failed_writes": sum(int(d.get("failed_writes", 0)) for _, d in ledgers),
            "failed_records": sum(int(d.get("failed_records", 0)) for _, d in ledgers),
            "last_failure_at": max((d.get("last_failure_at") or "" for _, d in ledgers), default="") or None,
            "ledgers": [str(ledger_path(f)) for f, _ in ledgers]}


def records_frame(records: Sequence[dict], classes: Sequence[str] | None = None):
    """Flat table: predicted, confidence, label, p_<class>, emb_<i>, image-stat columns, timestamp."""
    import pandas as pd

    if classes is None:
        classes = list(records[0]["probabilities"]) if records else []
    rows = []
    for r in records:
        row = {"timestamp": r["timestamp"], "request_id": r.get("request_id"), "predicted": r["predicted"],
               "confidence": float(r.get("confidence", max(r["probabilities"].values()))),
               "label": r.get("label"), "model_version": r["model_version"]}
        for c in classes:
            row[f"p_{c}"] = float(r["probabilities"].get(c, np.nan))
        for i, v in enumerate(r.get("embedding") or []):
            row[f"emb_{i}"] = float(v)
        for c in IMAGE_STAT_COLUMNS:
            row[c] = float(r["image_stats"].get(c, np.nan))
        rows.append(row)
    return pd.DataFrame(rows)
