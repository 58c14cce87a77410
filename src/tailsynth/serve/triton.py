"""Start the real tritonserver binary from nvidia-pytriton on a model repository, bound to 127.0.0.1.

nvidia-pytriton and the python-backend stub need numpy < 2, so they live in their own environment
(.venv-triton, made by serving/setup_triton_env.sh) and Triton runs as a separate process. The stub embeds
Python and finds its interpreter through PATH (as pytriton itself arranges it), so putting
.venv-triton/bin first on PATH makes the python-backend models run in the Triton environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MissingInputError
from .ports import free_port, wait_http_ready

ENV_VAR = "TAILSYNTH_TRITON_VENV"
VENV_NAME = ".venv-triton"
# Written by serving/setup_triton_env.sh beside the checkout's pyproject.toml: the absolute path of the environment it
# made (TRITON_VENV may have put it anywhere).
LOCATION_FILE = ".venv-triton.location"
SETUP_SCRIPT = "serving/setup_triton_env.sh"
SETUP_HINT = f"run {SETUP_SCRIPT} (creates {VENV_NAME} with nvidia-pytriton==0.7.0 and numpy<2)"


class TritonUnavailable(RuntimeError):
    """The Triton environment or binary is missing or cannot start here."""


def source_root() -> Path | None:
    """The folder the installed tailsynth distribution was installed from (an editable install's checkout), as pip
    recorded it (PEP 610 direct_url.json); None for a wheel or an install that recorded no local folder. The
    package's own metadata, not its file's place: the library finds nothing by path."""
    import json
    from importlib.metadata import distributions
    from urllib.parse import unquote, urlparse

    # Several may be found: run from the checkout, setuptools' `tailsynth.egg-info` there (no direct_url.json)
    # comes before the installed dist-info on the import path.
    text = next((t for d in distributions(name="tailsynth") if (t := d.read_text("direct_url.json"))), None)
    if text is None:
        return None
    try:
        url = urlparse(json.loads(text or "{}").get("url", ""))
    except ValueError:
        return None
    root = Path(unquote(url.path)) if url.scheme == "file" else None
    return root if root is not None and root.is_dir() else None


def _recorded_env(root: Path) -> Path | None:
    try:
        text = (root / LOCATION_FILE).read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def triton_env_candidates(cwd: Path | None = None, root: Path | None = None) -> list[tuple[Path, str]]:
    """Where the Triton environment may be, in the order they are tried, each with where the guess comes from:
    TAILSYNTH_TRITON_VENV (alone, when set: an explicit choice is never silently replaced); else `.venv-triton` in
    the working directory CWD or above it (the checkout's, for `make test`); else the checkout the package was
    installed from, ROOT (default `source_root()`): the location setup_triton_env.sh recorded there, then its
    `.venv-triton`. So `--backend triton` works from any working folder of an editable install."""
    if os.environ.get(ENV_VAR):
        return [(Path(os.environ[ENV_VAR]), ENV_VAR)]
    here = Path(cwd or Path.cwd()).resolve()
    found = [(d / VENV_NAME, "working folder" if d == here else "above the working folder")
             for d in (here, *here.parents) if (d / VENV_NAME).is_dir()]
    cands = found[:1] or [(here / VENV_NAME, "working folder")]
    root = root if root is not None else source_root()
    if root is not None:
        recorded = _recorded_env(root)
        if recorded is not None:
            cands.append((recorded, f"recorded in {root / LOCATION_FILE}"))
        cands.append((root / VENV_NAME, "the checkout tailsynth was installed from"))
    seen, out = set(), []
    for p, why in cands:
        if p not in seen:
            seen.add(p)
            out.append((p, why))
    return out


def _usable(env: Path) -> bool:
    return (env / "bin" / "python").exists()


def find_triton_env(cwd: Path | None = None, root: Path | None = None) -> Path:
    """The first candidate (`triton_env_candidates`) holding a Python environment; TritonUnavailable naming every
    path tried and how to make one otherwise."""
    cands = triton_env_candidates(cwd, root)
    for env, _ in cands:
        if _usable(env):
            return env
    root = root if root is not None else source_root()
    script = root / SETUP_SCRIPT if root is not None and (root / SETUP_SCRIPT).is_file() else Path(SETUP_SCRIPT)
    tried = "; ".join(f"{p} ({why})" for p, why in cands)
    raise TritonUnavailable(
        f"no Triton environment found (tried: {tried}). Create one with `bash {script}` (it makes {VENV_NAME} with "
        f"nvidia-pytriton==0.7.0 and numpy<2 beside the checkout and records where), or set {ENV_VAR} to an "
        "existing one")


def triton_env_path() -> Path:
    """The Triton environment `find_triton_env` finds, else the first place it would look (for callers that report
    a missing environment themselves)."""
    try:
        return find_triton_env()
    except TritonUnavailable:
        return triton_env_candidates()[0][0]


def _site_packages(env: Path) -> Path:
    hits = sorted(env.glob("lib/python3.*/site-packages"))
    if not hits:
        raise TritonUnavailable(f"{env}: not a Python environment; {SETUP_HINT}")
    return hits[0]


def locate(env: Path | None = None) -> dict:
    """Paths of the binary, its libraries, the python backend and the stub for the env's Python version."""
    env = Path(env) if env else find_triton_env()
    py = env / "bin" / "python"
    if not py.exists():
        raise TritonUnavailable(f"no Triton environment at {env}; {SETUP_HINT}")
    sp = _site_packages(env)
    pyver = sp.parent.name.removeprefix("python")
    root = sp / "pytriton" / "tritonserver"
    paths = {
        "env": env,
        "python": py,
        "binary": root / "bin" / "tritonserver",
        "libs": sp / "nvidia_pytriton.libs",
        "backend": root / "backends" / "python",
        "stub": root / "python_backend_stubs" / pyver / "triton_python_backend_stub",
    }
    for k in ("binary", "libs", "backend", "stub"):
        if not paths[k].exists():
            raise TritonUnavailable(f"{paths[k]} missing (nvidia-pytriton incomplete?); {SETUP_HINT}")
    libdir = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    paths["libpython_dir"] = Path(libdir)
    return paths


def _backend_dir(paths: dict, workdir: Path) -> Path:
    # Triton expects <backend-directory>/python/{libtriton_python.so, utils, stub} side by side.
    dst = workdir / "backends" / "python"
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(paths["backend"] / f, dst / f)
    shutil.copy2(paths["stub"], dst / "triton_python_backend_stub")
    return dst.parent


def _env(paths: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{paths['env'] / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    libs = [str(paths["libpython_dir"]), str(paths["libs"])]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    return env


def _die_with_parent() -> None:
    # Linux: SIGTERM the server if the launching process dies without stopping it (no orphaned Triton).
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _kill_group(pgid: int) -> None:
    import signal

    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is already gone
        pass


@dataclass
class TritonProcess:
    repo: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen
    workdir: Path
    log_path: Path
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Triton unloads models and exits
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        # Triton runs in its own session (start_new_session): its python-backend stubs share its process group.
        # When Triton died by SIGKILL (OOM killer, a test), nothing told the stubs to go; they would live on as
        # orphans holding memory. Only this group's processes are signalled.
        _kill_group(self.process.pid)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_triton(repo: str | Path, http_port: int | None = None, env: Path | None = None,
                 ready_timeout: float = 90.0, log_verbose: int = 0, models: Sequence[str] | None = None,
                 extra_args: Sequence[str] = (), extra_env: dict | None = None) -> TritonProcess:
    """Start tritonserver on REPO (HTTP, gRPC and metrics all on 127.0.0.1) and wait until it is ready.

    models: the models to load (None: all of the repository); extra_args: more tritonserver flags (the ensemble
    mode's restricted APIs); extra_env: more environment for Triton and its python-backend models."""
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise MissingInputError(f"{repo}: no model repository (run `tailsynth export --target local`)")
    paths = locate(env)
    workdir = Path(tempfile.mkdtemp(prefix="tailsynth-triton-"))
    backends = _backend_dir(paths, workdir)
    http_port = http_port or free_port()
    grpc_port, metrics_port = free_port(), free_port()
    cmd = [str(paths["binary"]), f"--model-repository={repo}", f"--backend-directory={backends}",
           "--model-control-mode=explicit", *[f"--load-model={m}" for m in (models or ["*"])], "--exit-on-error=true", "--exit-timeout-secs=10", "--strict-readiness=true",
           "--allow-http=true", "--http-address=127.0.0.1", f"--http-port={http_port}",
           "--allow-grpc=true", "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
           "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
           "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}", f"--log-verbose={log_verbose}",
           *extra_args]
    log_path = workdir / "tritonserver.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env={**_env(paths), **(extra_env or {})},
                                cwd=workdir,
                                start_new_session=True, preexec_fn=_die_with_parent)
    tp = TritonProcess(repo, http_port, grpc_port, metrics_port, proc, workdir, log_path)
    try:
        wait_http_ready(f"{tp.url}/v2/health/ready", proc, ready_timeout)
    except Exception as e:
        log = tp.log()[-3000:]
        tp.stop()
        raise TritonUnavailable(f"tritonserver on {repo} did not become ready: {e}\n--- log tail ---\n{log}") from e
    return tp


def wait_until_stopped(tp: TritonProcess, poll: float = 0.5) -> int:
    while tp.process.poll() is None:
        time.sleep(poll)
    return tp.process.returncode


class TritonSupervisor:
    """Keeps the local tritonserver answering behind the transformer (the `recover` hook of PredictorHealth).

    A dead server is reaped (no zombie) and restarted on the same HTTP port, at most `max_restarts` times;
    a live server whose model keeps failing (e.g. a killed python-backend stub) gets the model unloaded and
    loaded again, which starts a new stub. Returns False when it gives up, so the endpoint exits non-zero."""

    def __init__(self, repo: str | Path, http_port: int | None = None, max_restarts: int = 3,
                 model_name: str = "lesion-classifier", reload_models: Sequence[str] | None = None,
                 admin_headers: dict | None = None, **start_kw):
        """reload_models: what a reload unloads and loads again, composing models first and an ensemble last
        (default: model_name); admin_headers: sent with the model-repository calls (a restricted API)."""
        self.repo = Path(repo)
        self.max_restarts = max_restarts
        self.model_name = model_name
        self.reload_models = list(reload_models or [model_name])
        self.admin_headers = dict(admin_headers or {})
        self.start_kw = start_kw
        self.restarts = 0
        self.reloads = 0
        self.tp = start_triton(self.repo, http_port=http_port, **start_kw)

    def _verified(self) -> bool:
        """Whether the repository still holds the exported bytes (a restart or reload reads them from disk again)."""
        import sys

        from ..errors import TailsynthError
        from .integrity import verify_repository

        try:
            verify_repository(self.repo)
            return True
        except TailsynthError as e:
            print(f"refusing to reload the model: {e}", file=sys.stderr, flush=True)
            return False

    def _restart(self, why: str) -> bool:
        import sys

        old = self.tp
        old.stop()  # kills what is left, waits (reaps), removes the work folder
        if not self._verified():
            return False
        if self.restarts >= self.max_restarts:
            print(f"tritonserver {why}; {self.restarts} restart(s) already, giving up", file=sys.stderr, flush=True)
            return False
        self.restarts += 1
        print(f"tritonserver {why}; restart {self.restarts}/{self.max_restarts}", file=sys.stderr, flush=True)
        try:
            self.tp = start_triton(self.repo, http_port=old.http_port, **self.start_kw)
        except (TritonUnavailable, OSError) as e:
            print(f"tritonserver restart failed: {e}", file=sys.stderr, flush=True)
            return False
        return True

    def _reload_model(self) -> bool:
        import urllib.request

        if not self._verified():
            return False
        # Unload the ensemble before its parts, load the parts before the ensemble.
        plan = [(m, "unload") for m in reversed(self.reload_models)] + [(m, "load") for m in self.reload_models]
        try:
            for model, action in plan:
                req = urllib.request.Request(f"{self.tp.url}/v2/repository/models/{model}/{action}", data=b"{}",
                                             method="POST",
                                             headers={"Content-Type": "application/json", **self.admin_headers})
                with urllib.request.urlopen(req, timeout=60) as r:
                    r.read()
        except OSError:
            return False
        self.reloads += 1
        return True

    def recover(self, failures: int, stub_dead: bool = False) -> bool | None:
        """stub_dead: the failure named a dead python-backend stub, so reload at once. (With several instances
        of a model, the next probe may reach a live one and clear the failure count: waiting for two failures
        in a row would leave the dead instance failing requests.)"""
        rc = self.tp.process.poll()
        if rc is not None:
            return self._restart(f"exited with code {rc}")
        if failures < 2 and not stub_dead:
            return None  # one failed probe may be a blip: look again first
        if self._reload_model():
            return True
        return self._restart("is running but cannot serve the model")

    def stop(self) -> None:
        self.tp.stop()
