"""A run's data sets versioned with DVC and restored byte-identical: a local remote and a real S3 endpoint (moto)."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys

import boto3
import pytest
import yaml
from local_servers import moto_server
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.data.versioning import (
    VersioningError,
    dvc_md5,
    pull_run,
    record_run_versions,
    run_versions,
    version_run,
)
from tailsynth.runinfo import read_run


def _sets(root):
    """A staged real-data folder and a synthetic set (binary images, nested, a manifest) with random bytes."""
    real = root / "data"
    real.mkdir(parents=True)
    (real / "tiny.npz").write_bytes(os.urandom(20_000))
    syn = root / "selected"
    (syn / "images").mkdir(parents=True)
    for i in range(5):
        (syn / "images" / f"{i:06d}_syn_DF_{i}.png").write_bytes(os.urandom(3_000 + i))
    (syn / "selected_manifest.csv").write_text("path,class\n" + "".join(f"images/{i:06d}_syn_DF_{i}.png,DF\n"
                                                                        for i in range(5)))
    (syn / "quality.json").write_text('{"selection": {"gamma": 0.5}}')
    return real, syn


def _same_tree(a, b) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all(filecmp.cmp(a / p, b / p, shallow=False) for p in fa)


def test_dvc_md5_equals_what_dvc_add_records(tmp_path):
    _sets(tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "selected"], cwd=tmp_path, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    recorded = yaml.safe_load((tmp_path / "selected.dvc").read_text())["outs"][0]["md5"]
    assert dvc_md5(tmp_path / "selected") == recorded


def test_local_remote_push_record_and_byte_identical_pull(tmp_path):
    real, syn = _sets(tmp_path)
    store = tmp_path / "dvc-store"
    record = version_run(real, syn, str(store), data_revision="sha256:param")
    run = tmp_path / "run"
    record_run_versions(run, record, params={"remote": str(store)})

    stage = read_run(run)["stages"]["version"]
    sets = stage["dvc"]["sets"]
    assert sets["synthetic"]["md5"] == dvc_md5(syn) and sets["real"]["md5"] == dvc_md5(real)
    assert sets["real"]["data_revision"] == "sha256:param" and stage["dvc"]["remote"]["url"] == str(store)
    for name in ("real", "synthetic"):
        assert (run / "dvc" / f"{name}.dvc").is_file() and sets[name]["pushed"]

    dest = tmp_path / "restored"
    r = CliRunner().invoke(app, ["data", "pull", "--run", str(run), "--dest", str(dest)])
    assert r.exit_code == 0, r.output
    assert _same_tree(syn, dest)
    pull_run(run, tmp_path / "real-back", what="real")
    assert _same_tree(real, tmp_path / "real-back")

    # A destination holding anything is refused, by name; so is a set the run never pushed.
    r = CliRunner().invoke(app, ["data", "pull", "--run", str(run), "--dest", str(dest)])
    assert r.exit_code == 1 and "not an empty folder" in r.output and str(dest) in r.output
    with pytest.raises(VersioningError, match="no set 'masks'"):
        pull_run(run, tmp_path / "x", what="masks")


def test_no_remote_records_revisions_but_refuses_to_pull(tmp_path):
    real, syn = _sets(tmp_path)
    run = tmp_path / "run"
    record_run_versions(run, version_run(real, syn, None))
    sets = run_versions(run)["sets"]
    assert sets["synthetic"]["md5"] == dvc_md5(syn) and not sets["synthetic"]["pushed"]
    with pytest.raises(VersioningError, match="never pushed"):
        pull_run(run, tmp_path / "back")
    with pytest.raises(VersioningError, match="no `version` stage"):
        run_versions(tmp_path)


@pytest.fixture
def s3_env(monkeypatch, tmp_path):
    with moto_server() as endpoint:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                     "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
                     "DVC_NO_ANALYTICS": "1"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="runs")
        yield endpoint


def test_s3_remote_push_and_byte_identical_pull(tmp_path, s3_env):
    real, syn = _sets(tmp_path)
    record = version_run(real, syn, {"url": "s3://runs/tailsynth", "endpointurl": s3_env})
    run = tmp_path / "run"
    record_run_versions(run, record)
    assert run_versions(run)["remote"] == {"url": "s3://runs/tailsynth", "endpointurl": s3_env}
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_env).list_objects_v2(Bucket="runs")["Contents"]]
    assert len(keys) == 1 + 5 + 2 + 2  # npz, 5 images, manifest + quality, 2 directory listings
    dest = tmp_path / "restored"
    r = CliRunner().invoke(app, ["data", "pull", "--run", str(run), "--dest", str(dest)])
    assert r.exit_code == 0, r.output
    assert _same_tree(syn, dest)
