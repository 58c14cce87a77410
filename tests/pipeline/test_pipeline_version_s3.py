"""The version stage pushes the selected synthetic set with DVC to a real S3 endpoint (moto_server, 127.0.0.1)."""

from __future__ import annotations

import json

import boto3
import pytest
from local_servers import moto_server


@pytest.fixture
def s3(monkeypatch, tmp_path):
    with moto_server() as endpoint:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                     "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
                     "AWS_ENDPOINT_URL": endpoint, "DVC_NO_ANALYTICS": "1"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="synthetic")
        yield client


def test_version_pushes_real_and_synthetic_sets(tmp_path, s3, artifact):
    from components import version

    sel = tmp_path / "selected"
    (sel / "images").mkdir(parents=True)
    (sel / "images" / "a.png").write_bytes(b"\x89PNG fake but bytes are bytes")
    (sel / "selected_manifest.csv").write_text("path,class\nimages/a.png,DF\n")
    real = tmp_path / "data"
    real.mkdir()
    (real / "tiny.npz").write_bytes(b"not really an npz, but versioned as bytes")
    cand = tmp_path / "candidates"
    cand.mkdir()
    diff = tmp_path / "diffusion"
    (diff / "unet").mkdir(parents=True)
    (diff / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    record = artifact("artifact", tmp_path / "record.json")
    rev = version.python_func(synthetic=artifact("dataset", sel), data=artifact("dataset", real),
                              candidates=artifact("dataset", cand), diffusion=artifact("model", diff),
                              data_revision="sha256:real", content_hash="c0ffee", remote="s3://synthetic/sets",
                              record=record)
    entry = json.loads((tmp_path / "record.json").read_text())
    syn, rl = entry["sets"]["synthetic"], entry["sets"]["real"]
    assert rev == syn["md5"] and rev.endswith(".dir") and syn["nfiles"] == 2 and syn["pushed"]
    assert rl["data_revision"] == "sha256:real" and rl["pushed"] and rl["md5"].endswith(".dir")
    assert entry["remote"]["url"] == "s3://synthetic/sets" and entry["real_content_hash"] == "c0ffee"
    assert len(entry["synthesizer"]["hash"]) == 12
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="synthetic").get("Contents", [])]
    assert keys and all(k.startswith("sets/") for k in keys)
    assert len(keys) == 5  # three files and two directory listings, content-addressed
