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

from ..errors import ConfigError, ServiceError
from ..hashing import data_revision, file_digest  # noqa: F401  (data_revision: part of this API)
from ..runinfo import RUN_FILE

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


# ---- run versioning: the data sets of one run, pushed and restorable -------------------------------------------
# A pipeline stage has no checkout of the project, so sets are versioned in a scratch DVC repository
# (`dvc init --no-scm`): `dvc add` gives each set its revision (DVC's md5, the same value `dvc add` in a
# checkout would give), the push sends it to the remote, and the `.dvc` text kept in the run folder is all
# `pull_run` needs to restore it anywhere.

RUN_DVC_DIR = "dvc"
VERSION_STAGE = "version"
SCRATCH_REMOTE = "storage"


def dvc_md5(path: str | Path) -> str:
    """DVC 3's revision of a file (md5 of the bytes) or folder (md5 of its listing, suffixed `.dir`),
    computed without a repository: equal to the `md5` that `dvc add PATH` writes."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    p = Path(path)
    if p.is_file():
        return _md5_file(p)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such file or folder to version")
    tree = Tree()
    for q in sorted(q for q in p.rglob("*") if q.is_file()):
        tree.add(q.relative_to(p).parts, Meta(size=q.stat().st_size), HashInfo("md5", _md5_file(q)))
    tree.digest()
    return tree.hash_info.value


def _md5_file(p: Path) -> str:
    return file_digest(p, "md5")


def remote_spec(remote: str, endpoint_url: str | None = None) -> dict:
    """A remote as run records hold it: {"url": s3://bucket/prefix or an absolute local folder[, "endpointurl"]}."""
    if not remote:
        raise VersioningError("no DVC remote given")
    u = urlparse(remote)
    if u.scheme == "s3":
        if not u.netloc:
            raise VersioningError(f"DVC remote {remote!r}: expected s3://bucket[/prefix]")
        spec = {"url": remote}
        if endpoint_url:
            spec["endpointurl"] = endpoint_url
        return spec
    if u.scheme not in ("", "file"):
        raise VersioningError(f"DVC remote {remote!r}: expected s3://bucket[/prefix] or a local folder")
    return {"url": str(Path(remote.removeprefix("file://")).expanduser().resolve())}


def default_remote(repo: str | Path = ".") -> dict:
    """The checkout's default DVC remote (core.remote) as a remote spec; a relative local remote resolves against
    .dvc/ like DVC does. This is the embedded default: `../../dvc-store`, a folder beside the checkout."""
    root = _find_repo_root(repo)
    _, settings = remote_config(root)
    url = settings.get("url", "")
    if urlparse(url).scheme == "s3":
        return remote_spec(url, settings.get("endpointurl"))
    path = Path(url.removeprefix("file://"))
    return {"url": str(path if path.is_absolute() else (root / ".dvc" / path).resolve())}


def _configure_scratch_remote(repo: Path, spec: dict) -> None:
    url = spec["url"]
    u = urlparse(url)
    if u.scheme == "s3":
        setup_s3_remote(u.netloc, endpoint_url=spec.get("endpointurl"), repo=repo, name=SCRATCH_REMOTE,
                        prefix=u.path.strip("/"), region=spec.get("region"), default=True)
        return
    from dvc.config import Config

    Path(url).mkdir(parents=True, exist_ok=True)
    conf = Config(dvc_dir=str(repo / ".dvc"))
    with conf.edit("repo") as c:
        c["remote"][SCRATCH_REMOTE] = {"url": url}
        c["core"]["remote"] = SCRATCH_REMOTE


def _scratch_repo(timeout: float | None) -> Path:
    import tempfile

    repo = Path(tempfile.mkdtemp(prefix="tailsynth-dvc-"))
    proc = _dvc(repo, ["init", "--no-scm", "-q"], timeout)
    if proc.returncode != 0:
        raise VersioningError(f"dvc init in {repo} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return repo


def version_sets(sets: dict[str, str | Path], remote: dict | str | None, timeout: float | None = 3600) -> dict:
    """Version each named file/folder with DVC and push it to REMOTE (a spec from `remote_spec`, a URL, or None).

    Returns {name: {"md5", "size", "nfiles", "dvc_file", "pushed"}}; "dvc_file" is the `.dvc` text that
    restores the set (`pull_run`). With no remote the revisions are still computed, and "pushed" is False.
    """
    import shutil

    import yaml

    if isinstance(remote, str):
        remote = remote_spec(remote, os.environ.get("AWS_ENDPOINT_URL"))
    for name, src in sets.items():
        if not name.isidentifier():
            raise VersioningError(f"set name {name!r}: use letters, digits and underscores")
        if not Path(src).exists():
            raise VersioningError(f"{src}: the {name} set to version does not exist")
    if not remote:
        return {name: {"md5": dvc_md5(src), "pushed": False} for name, src in sets.items()}
    repo = _scratch_repo(timeout)
    try:
        for name, src in sets.items():
            (shutil.copytree if Path(src).is_dir() else shutil.copyfile)(src, repo / name)
        proc = _dvc(repo, ["add", "-q", *sets], timeout)
        if proc.returncode != 0:
            raise VersioningError(f"dvc add {' '.join(sets)} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
        _configure_scratch_remote(repo, remote)
        push(repo, remote=SCRATCH_REMOTE, targets=[f"{n}.dvc" for n in sets], timeout=timeout)
        out = {}
        for name in sets:
            text = (repo / f"{name}.dvc").read_text()
            entry = yaml.safe_load(text)["outs"][0]
            out[name] = {"md5": entry["md5"], "size": entry.get("size"), "nfiles": entry.get("nfiles"),
                         "dvc_file": text, "pushed": True}
        return out
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def record_run_versions(run_dir: str | Path, record: dict, params: dict | None = None) -> dict:
    """Write RUN_DIR/dvc/<set>.dvc for every pushed set and the `version` stage of RUN_DIR/RUN_FILE.

    RECORD is the version stage's output: {"remote": spec or None, "sets": {name: version_sets entry + "uri"}, ...}.
    Returns the `dvc` section written to the run record.
    """
    from ..runinfo import record_stage

    run_dir = Path(run_dir)
    sets = record.get("sets") or {}
    if not sets:
        raise VersioningError(f"version record for {run_dir} names no data sets")
    dvc_dir = run_dir / RUN_DVC_DIR
    section = {"remote": record.get("remote"), "sets": {}}
    for name, entry in sets.items():
        item = {k: v for k, v in entry.items() if k != "dvc_file"}
        if entry.get("dvc_file"):
            dvc_dir.mkdir(parents=True, exist_ok=True)
            (dvc_dir / f"{name}.dvc").write_text(entry["dvc_file"])
            item["dvc_file"] = f"{RUN_DVC_DIR}/{name}.dvc"
        section["sets"][name] = item
    extra = {k: v for k, v in record.items() if k not in ("remote", "sets")}
    record_stage(run_dir, VERSION_STAGE, params or {}, dvc=section, **extra)
    return section


def run_versions(run_dir: str | Path) -> dict:
    """The `dvc` section of RUN_DIR/RUN_FILE's version stage; a clear error when the run has none."""
    from ..runinfo import read_run

    run = read_run(run_dir)
    section = ((run.get("stages") or {}).get(VERSION_STAGE) or {}).get("dvc")
    if not section:
        raise VersioningError(f"{Path(run_dir) / RUN_FILE}: no `{VERSION_STAGE}` stage with DVC revisions "
                              "(was the run's version stage skipped, or is this not a run folder?)")
    return section


def pull_run(run_dir: str | Path, dest: str | Path, what: str = "synthetic", remote: str | None = None,
             timeout: float | None = 3600) -> dict:
    """Restore the set WHAT of the run in RUN_DIR from its DVC remote into DEST (absent or empty).

    The remote is the one the run pushed to, unless REMOTE (a URL or local folder) names another holding the same
    content. The restored bytes are checked against the recorded revision.
    """
    import shutil

    import yaml

    run_dir, dest = Path(run_dir), Path(dest)
    section = run_versions(run_dir)
    entry = (section.get("sets") or {}).get(what)
    if not entry:
        known = ", ".join(sorted(section.get("sets") or {})) or "none"
        raise VersioningError(f"{run_dir}: the run versioned no set {what!r} (versioned: {known})")
    if not entry.get("pushed"):
        raise VersioningError(f"{run_dir}: set {what!r} (revision {entry.get('md5')}) was never pushed to a DVC "
                              "remote, so it cannot be pulled; its files may still be at " + str(entry.get("uri")))
    dvc_file = run_dir / entry["dvc_file"]
    if not dvc_file.is_file():
        raise VersioningError(f"{dvc_file}: the run's .dvc file for {what!r} is missing")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise VersioningError(f"{dest}: destination exists and is not an empty folder")
    spec = remote_spec(remote, os.environ.get("AWS_ENDPOINT_URL")) if remote else dict(section.get("remote") or {})
    if not spec.get("url"):
        raise VersioningError(f"{run_dir}: no DVC remote recorded for the run; pass one")
    if urlparse(spec["url"]).scheme == "s3" and not spec.get("endpointurl") and os.environ.get("AWS_ENDPOINT_URL"):
        spec["endpointurl"] = os.environ["AWS_ENDPOINT_URL"]
    out = yaml.safe_load(dvc_file.read_text())["outs"][0]
    if out.get("md5") != entry["md5"]:
        raise VersioningError(f"{dvc_file}: md5 {out.get('md5')} differs from {RUN_FILE}'s {entry['md5']}")
    repo = _scratch_repo(timeout)
    try:
        out["path"] = what
        (repo / f"{what}.dvc").write_text(yaml.safe_dump({"outs": [out]}, sort_keys=False))
        _configure_scratch_remote(repo, spec)
        pull(repo, remote=SCRATCH_REMOTE, targets=[f"{what}.dvc"], timeout=timeout)
        got = dvc_md5(repo / what)
        if got != entry["md5"]:
            raise VersioningError(f"pulled {what!r} has revision {got}, expected {entry['md5']}")
        dest.mkdir(parents=True, exist_ok=True)
        src = repo / what
        if src.is_dir():
            for child in src.iterdir():
                shutil.move(str(child), dest / child.name)
        else:
            shutil.move(str(src), dest / src.name)
        return {"set": what, "md5": got, "dest": str(dest), "remote": spec["url"],
                "files": sum(1 for q in dest.rglob("*") if q.is_file())}
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def version_run(real: str | Path, synthetic: str | Path, remote: dict | str | None, *, data_revision: str = "",
                candidates: str | Path | None = None, synthesizer: str | Path | None = None,
                synthesizer_hash: str | None = None, timeout: float | None = 3600) -> dict:
    """The version stage of a run: push the staged real data and the selected synthetic set, and say where each
    came from. Returns the record `record_run_versions` turns into the run record's version stage.

    `synthesizer_hash`: the synthesizer's weights hash (`tailsynth.diffusion.model.model_hash`), given by the caller
    with `synthesizer`: data comes before diffusion in the package order, so versioning does not open a model."""
    if synthesizer and not synthesizer_hash:
        raise ConfigError(f"version_run: synthesizer {synthesizer} given without its synthesizer_hash")
    if isinstance(remote, str) and remote:
        remote = remote_spec(remote, os.environ.get("AWS_ENDPOINT_URL"))
    sets = version_sets({"real": real, "synthetic": synthetic}, remote or None, timeout=timeout)
    sets["real"].update(uri=str(real), content_revision=data_revision_of(real), data_revision=data_revision or None)
    sets["synthetic"].update(uri=str(synthetic), content_revision=data_revision_of(synthetic))
    record = {"remote": remote or None, "sets": sets}
    if candidates:
        record["candidates"] = {"uri": str(candidates)}
    if synthesizer:
        record["synthesizer"] = {"uri": str(synthesizer), "hash": synthesizer_hash}
    return record


def data_revision_of(path: str | Path) -> str:
    """`data_revision` of the data source inside PATH (a staged data folder holding one .npz is that file): the value
    classifier model folders record as their training data's revision."""
    from .source import source_in

    return data_revision(source_in(path))
