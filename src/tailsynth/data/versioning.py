"""DVC versioning: content revisions, push/pull with clear errors, S3 remote setup.

The repository's default remote is a local directory (works offline); clusters add an S3 remote with
`setup_s3_remote` (`tailsynth data remote-s3`). Credentials never enter the config: DVC and boto3 read
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) from the environment.

Before an S3 transfer the remote is probed with boto3 (credentials, endpoint, bucket), because DVC
reports those three failures as one generic "failed to push/pull" after retrying for minutes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ServiceError
from ..hashing import data_revision, file_digest  # noqa: F401  (data_revision: part of this API)

DEFAULT_S3_REMOTE = "s3"
PROBE_TIMEOUT_S = 5


class VersioningError(ServiceError):
    """A DVC operation that cannot proceed; the message says why and what to do."""


# ---- content revision -------------------------------------------------------------------------------

# ---- config ---------------------------------------------------------------------------------------

def _find_repo_root(repo: str | Path) -> Path:
    p = Path(repo).resolve()
    for cand in (p, *p.parents):
        if (cand / ".dvc").is_dir():
            return cand
    raise VersioningError(f"{p}: not inside a DVC repository (run `dvc init` in the git repository first)")


def remote_config(repo: str | Path = ".", remote: str | None = None) -> tuple[str, dict]:
    """(name, settings) of `remote`, or of the default remote (core.remote)."""
    from dvc.config import Config

    root = _find_repo_root(repo)
    conf = Config(dvc_dir=str(root / ".dvc"))
    remotes = dict(conf.get("remote", {}))
    name = remote or conf.get("core", {}).get("remote")
    if not name:
        raise VersioningError(f"{root}: no DVC remote given and no default remote set (dvc remote default NAME)")
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise VersioningError(f"{root}: DVC remote {name!r} is not configured (configured: {known})")
    return name, dict(remotes[name])


def setup_s3_remote(
    bucket: str,
    endpoint_url: str | None = None,
    repo: str | Path = ".",
    name: str = DEFAULT_S3_REMOTE,
    prefix: str = "tailsynth",
    region: str | None = None,
    default: bool = False,
) -> dict:
    """Add (or replace) an S3 remote `s3://bucket/prefix` in the repository's .dvc/config.

    Only the bucket, endpoint and region go into the (committed) config; credentials stay in the environment.
    """
    from dvc.config import Config

    if not bucket or "/" in bucket:
        raise VersioningError(f"invalid bucket name {bucket!r} (give the bare bucket name; use --prefix for a path)")
    if endpoint_url is not None:
        u = urlparse(endpoint_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise VersioningError(f"invalid endpoint URL {endpoint_url!r} (expected http(s)://host[:port])")
    root = _find_repo_root(repo)
    url = f"s3://{bucket}/{prefix.strip('/')}" if prefix.strip("/") else f"s3://{bucket}"
    settings = {"url": url}
    if endpoint_url:
        settings["endpointurl"] = endpoint_url
    if region:
        settings["region"] = region
    conf = Config(dvc_dir=str(root / ".dvc"))
    with conf.edit("repo") as c:
        c["remote"][name] = settings
        if default:
            c["core"]["remote"] = name
    return {"name": name, **settings, "default": default}


# ---- S3 probe --------------------------------------------------------------------------------------

def check_s3_remote(settings: dict, name: str = DEFAULT_S3_REMOTE) -> None:
    """Raise VersioningError naming the cause when the S3 remote cannot be used."""
    import boto3
    import botocore.exceptions as bex
    from botocore.config import Config as BotoConfig

    u = urlparse(settings["url"])
    bucket = u.netloc
    endpoint = settings.get("endpointurl")
    where = endpoint or "AWS S3"
    session = boto3.Session(profile_name=settings.get("profile")) if settings.get("profile") else boto3.Session()
    if session.get_credentials() is None:
        raise VersioningError(
            f"DVC remote {name!r} ({settings['url']}): no S3 credentials found. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment; they are never stored in .dvc/config."
        )
    if endpoint:
        e = urlparse(endpoint)
        port = e.port or (443 if e.scheme == "https" else 80)
        try:
            socket.create_connection((e.hostname, port), timeout=PROBE_TIMEOUT_S).close()
        except OSError as err:
            raise VersioningError(
                f"DVC remote {name!r}: S3 endpoint {endpoint} is unreachable ({err}). Check the endpoint URL "
                f"(tailsynth data remote-s3 --endpoint-url) and that the service is running."
            ) from None
    client = session.client(
        "s3", endpoint_url=endpoint, region_name=settings.get("region"),
        config=BotoConfig(connect_timeout=PROBE_TIMEOUT_S, read_timeout=PROBE_TIMEOUT_S,
                          retries={"max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except bex.EndpointConnectionError as err:
        raise VersioningError(f"DVC remote {name!r}: S3 endpoint {where} is unreachable ({err})") from None
    except bex.NoCredentialsError:
        raise VersioningError(f"DVC remote {name!r}: no S3 credentials found (set AWS_ACCESS_KEY_ID/"
                              "AWS_SECRET_ACCESS_KEY)") from None
    except bex.ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise VersioningError(
                f"DVC remote {name!r}: bucket {bucket!r} does not exist at {where}. Create it first "
                f"(e.g. `aws s3 mb s3://{bucket}" + (f" --endpoint-url {endpoint}" if endpoint else "") + "`)."
            ) from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise VersioningError(
                f"DVC remote {name!r}: access to bucket {bucket!r} at {where} denied ({code}): check the "
                "credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."
            ) from None
        raise VersioningError(f"DVC remote {name!r}: S3 error on bucket {bucket!r} at {where}: {err}") from None
    except bex.BotoCoreError as err:
        raise VersioningError(f"DVC remote {name!r}: cannot reach S3 at {where} ({err})") from None


def _check_remote(repo: Path, remote: str | None, for_pull: bool) -> str:
    name, settings = remote_config(repo, remote)
    url = settings.get("url", "")
    scheme = urlparse(url).scheme
    if scheme == "s3":
        check_s3_remote(settings, name)
    elif scheme in ("", "file") and for_pull:
        # Relative local remotes are relative to .dvc/ (where the config lives).
        path = Path(url.removeprefix("file://"))
        path = path if path.is_absolute() else (repo / ".dvc" / path).resolve()
        if not path.is_dir():
            raise VersioningError(f"DVC remote {name!r}: local store {path} does not exist (nothing was pushed there)")
    return name


# ---- push / pull ----------------------------------------------------------------------------------

def _dvc(repo: Path, args: list[str], timeout: float | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    # DVC runs in a child process: it keeps global state (logging, locks) that a library caller should not inherit.
    try:
        return subprocess.run([sys.executable, "-m", "dvc", *args], check=False, cwd=repo, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VersioningError(f"`dvc {' '.join(args)}` in {repo} did not finish within {timeout} s") from None


def _transfer(op: str, repo: str | Path, remote: str | None, targets, jobs: int | None, timeout: float | None):
    root = _find_repo_root(repo)
    name = _check_remote(root, remote, for_pull=(op == "pull"))
    args = [op, "-r", name]
    if jobs:
        args += ["-j", str(jobs)]
    args += [str(t) for t in (targets or [])]
    proc = _dvc(root, args, timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise VersioningError(f"dvc {op} to/from remote {name!r} failed in {root}:\n{tail}")
    return {"remote": name, "op": op, "output": proc.stdout.strip()}


def push(repo: str | Path = ".", remote: str | None = None, targets=None, jobs: int | None = None,
         timeout: float | None = 3600) -> dict:
    """`dvc push` after checking the remote; raises VersioningError naming the cause."""
    return _transfer("push", repo, remote, targets, jobs, timeout)


def pull(repo: str | Path = ".", remote: str | None = None, targets=None, jobs: int | None = None,
         timeout: float | None = 3600) -> dict:
    """`dvc pull` after checking the remote; raises VersioningError naming the cause."""
    return _transfer("pull", repo, remote, targets, jobs, timeout)
