"""DVC: a real S3 endpoint (moto_server on 127.0.0.1), push from one clone, pull into a fresh one."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_servers import free_port, moto_server
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.data.versioning import VersioningError, data_revision, pull, push, setup_s3_remote

BUCKET = "tailsynth-test"


def _moto_server_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Test credentials in the environment only; no shared config, no instance metadata lookups."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


def _run(*args, cwd):
    return subprocess.run(list(args), cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def repo_template(tmp_path_factory) -> Path:
    return _make_dvc_repo(tmp_path_factory.mktemp("template") / "repo")


@pytest.fixture
def new_repo(repo_template):
    """A fresh copy of the template repository (building one costs several seconds of DVC start-up)."""
    def make(dest: Path) -> Path:
        shutil.copytree(repo_template, dest, symlinks=True)
        return dest
    return make


def _make_dvc_repo(root: Path) -> Path:
    """A git + DVC repository with a small tracked data/ folder (binary and text, nested)."""
    root.mkdir(parents=True)
    _run("git", "init", "-q", cwd=root)
    _run("git", "config", "user.email", "test@example.com", cwd=root)
    _run("git", "config", "user.name", "test", cwd=root)
    _run(sys.executable, "-m", "dvc", "init", "-q", cwd=root)
    data = root / "data"
    (data / "splits").mkdir(parents=True)
    (data / "splits" / "manifest.csv").write_text("image_id,split\nISIC_0000000,train\nISIC_0000001,val\n")
    (data / "blob.bin").write_bytes(os.urandom(50_000))
    _run(sys.executable, "-m", "dvc", "add", "-q", "data", cwd=root)
    return root


def test_data_revision_is_content_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "x").mkdir(parents=True)
        (d / "x" / "f.txt").write_text("same")
        (d / "g.bin").write_bytes(b"\x00\x01")
    os.utime(b / "g.bin", (0, 0))
    assert data_revision(a) == data_revision(b)
    (b / "g.bin").write_bytes(b"\x00\x02")
    assert data_revision(a) != data_revision(b)
    (b / "g.bin").write_bytes(b"\x00\x01")
    (b / "x" / "f.txt").rename(b / "x" / "h.txt")  # same bytes, another name
    assert data_revision(a) != data_revision(b)
    assert data_revision(a / "g.bin").startswith("sha256:") and len(data_revision(a / "g.bin")) == 7 + 64
    with pytest.raises(FileNotFoundError):
        data_revision(tmp_path / "none")


def test_push_then_fresh_clone_pulls_identical(s3_endpoint, aws_env, new_repo, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=BUCKET)
    repo = new_repo(tmp_path / "origin")
    res = CliRunner().invoke(app, ["data", "remote-s3", "--bucket", BUCKET, "--endpoint-url", s3_endpoint,
                                   "--default", "--repo", str(repo)])
    assert res.exit_code == 0, res.output
    config = (repo / ".dvc" / "config").read_text()
    assert f"s3://{BUCKET}/tailsynth" in config and s3_endpoint in config
    assert "testing" not in config  # credentials stay in the environment
    _run("git", "add", "-A", cwd=repo)
    _run("git", "commit", "-qm", "data", cwd=repo)
    out = push(repo)
    assert out["remote"] == "s3"
    keys = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
    assert keys >= 3  # two files and the directory listing

    clone = tmp_path / "clone"
    _run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data").exists()
    res = CliRunner().invoke(app, ["data", "pull", "--repo", str(clone)])
    assert res.exit_code == 0, res.output
    cmp = filecmp.dircmp(repo / "data", clone / "data")
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files
    for rel in ("blob.bin", "splits/manifest.csv"):
        assert (clone / "data" / rel).read_bytes() == (repo / "data" / rel).read_bytes()
    assert data_revision(clone / "data") == data_revision(repo / "data")


def test_missing_bucket_is_named(s3_endpoint, aws_env, new_repo, tmp_path):
    repo = new_repo(tmp_path / "r")
    setup_s3_remote("no-such-bucket", s3_endpoint, repo=repo, default=True)
    with pytest.raises(VersioningError, match="bucket 'no-such-bucket' does not exist"):
        push(repo)
    with pytest.raises(VersioningError, match="bucket 'no-such-bucket' does not exist"):
        pull(repo)


def test_no_credentials_is_named(s3_endpoint, aws_env, monkeypatch, new_repo, tmp_path):
    repo = new_repo(tmp_path / "r")
    setup_s3_remote(BUCKET, s3_endpoint, repo=repo, default=True)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(VersioningError, match="no S3 credentials found.*AWS_ACCESS_KEY_ID"):
        push(repo)
    res = CliRunner().invoke(app, ["data", "pull", "--repo", str(repo)])
    assert res.exit_code == 1 and "no S3 credentials" in res.stderr


def test_unreachable_endpoint_is_named(aws_env, new_repo, tmp_path):
    repo = new_repo(tmp_path / "r")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    setup_s3_remote(BUCKET, dead, repo=repo, name="cluster")
    t = time.time()
    with pytest.raises(VersioningError, match=f"S3 endpoint {dead} is unreachable"):
        push(repo, remote="cluster")
    assert time.time() - t < 30


def test_config_errors_are_named(new_repo, tmp_path):
    with pytest.raises(VersioningError, match="not inside a DVC repository"):
        push(tmp_path)
    repo = new_repo(tmp_path / "r")
    with pytest.raises(VersioningError, match="no DVC remote given and no default remote"):
        push(repo)
    with pytest.raises(VersioningError, match="remote 'nope' is not configured"):
        pull(repo, remote="nope")
    with pytest.raises(VersioningError, match="invalid endpoint URL"):
        setup_s3_remote(BUCKET, "127.0.0.1:9000", repo=repo)


def test_local_default_remote_round_trip(new_repo, tmp_path):
    """The offline default: a local directory remote, configured relative to the repository."""
    repo = new_repo(tmp_path / "origin")
    # given from the repository root, DVC stores it relative to .dvc/ (as `../../dvc-store`), as in this project
    _run(sys.executable, "-m", "dvc", "remote", "add", "-d", "local", "../dvc-store", cwd=repo)
    assert "url = ../../dvc-store" in (repo / ".dvc" / "config").read_text()
    _run("git", "add", "-A", cwd=repo)
    _run("git", "commit", "-qm", "data", cwd=repo)
    clone = tmp_path / "clone"
    _run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    # the store is resolved per checkout: <checkout>/../dvc-store, i.e. tmp_path/dvc-store for both
    with pytest.raises(VersioningError, match="local store .* does not exist"):
        pull(clone)
    push(repo)
    assert (tmp_path / "dvc-store").is_dir()
    pull(clone)
    assert data_revision(clone / "data") == data_revision(repo / "data")
    shutil.rmtree(tmp_path / "dvc-store")
