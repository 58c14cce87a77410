"""`tailsynth serve`: the local embedded endpoint on 127.0.0.1.

backend "triton": the real tritonserver binary (nvidia-pytriton) on the exported repository, supervised
(restarted when it dies, its model reloaded when its python-backend stub dies), then the KServe transformer in
this process in front of it. backend "onnxruntime": the transformer alone, running the ONNX model in-process
(for machines where that binary cannot run). Runs until SIGTERM/SIGINT, then stops Triton; returns non-zero
when the predictor cannot be recovered.

With `tuning.workers` N > 1, N - 1 more transformer processes (`python -m tailsynth.serve.transformer`) share
the port with this one through SO_REUSEPORT. This process keeps the Triton supervisor; the others only probe
the predictor. The per-process limits (in-flight requests, heavy-lane queue) then apply per worker, and all
workers append to the same records file (one write per request, O_APPEND: lines do not interleave).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError, MissingInputError
from .images import Limits
from .ports import stop_process
from .tuning import Tuning

BACKENDS = ("triton", "onnxruntime")
# transformer: the KServe transformer in this process in front of Triton (what the KServe manifests deploy);
# ensemble: Triton alone serving lesion-classifier-e2e, clients on its v2 endpoint (tailsynth.serve.ensemble).
MODES = ("transformer", "ensemble")


def _worker_argv(backend: str, predictor: str, port: int, common: dict, tuning: Tuning) -> list[str]:
    lim: Limits = common["limits"]
    argv = [sys.executable, "-m", "tailsynth.serve.transformer", "--backend", backend, "--host", "127.0.0.1",
            "--http_port", str(port), "--reuse_port", "--records", common["records"],
            "--max_batch", str(lim.max_batch), "--max_body_bytes", str(lim.max_body_bytes),
            "--max_image_bytes", str(lim.max_image_bytes), "--max_pixels", str(lim.max_pixels),
            "--max_request_pixels", str(lim.max_request_pixels), "--max_inflight", str(common["max_inflight"]),
            *tuning.argv()]
    argv += ["--predictor_host", predictor] if backend == "triton" else ["--repo", predictor]
    if common["embedding"]:
        argv += ["--embedding", common["embedding"]]
    if common["repository_control"]:
        argv.append("--repository_control")
    return argv


def _start_workers(n: int, backend: str, predictor: str, common: dict, tuning: Tuning) -> list[subprocess.Popen]:
    """N extra transformer processes on common["port"]; returns once they and this process's socket all listen."""
    from .triton import _die_with_parent

    # Tokens travel in the environment, as for the container entry point: never on a command line.
    env = {k: v for k, v in os.environ.items() if k not in ("TAILSYNTH_TOKEN", "TAILSYNTH_ADMIN_TOKEN")}
    for key, value in (("TAILSYNTH_TOKEN", common["token"]), ("TAILSYNTH_ADMIN_TOKEN", common["admin_token"])):
        if value:
            env[key] = value
    argv = _worker_argv(backend, predictor, common["port"], common, tuning)
    procs = [subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent) for _ in range(n)]
    try:
        _wait_listening(common["port"], n + 1, procs)
    except BaseException:
        _stop_workers(procs)
        raise
    return procs


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on PORT (any address), from /proc/net/tcp{,6} (Linux)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def _wait_listening(port: int, n: int, procs: list[subprocess.Popen], timeout: float = 300.0) -> None:
    """Until N sockets listen on PORT: this process's (bound first) and one per extra worker (each binds after
    loading its model). Only then does any worker answer, so clients spread their connections over all of them;
    a connection that lands on a worker still loading waits in its queue instead of being refused."""
    import time

    deadline = time.monotonic() + timeout
    while listening_sockets(port) < n:
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a transformer worker exited before listening on port {port}: {dead[0]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"transformer workers not listening on port {port} after {timeout:.0f}s")
        time.sleep(0.2)


def _stop_workers(procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
    for p in procs:  # all at once first: they shut down in parallel
        if p.poll() is None:
            p.terminate()
    for p in procs:
        stop_process(p, timeout)


def serve(repo: str | Path, backend: str = "triton", port: int = 8080, token: str | None = None,
          records: str | Path | None = None, limits: Limits = Limits(), triton_port: int | None = None,
          admin_token: str | None = None, repository_control: bool = False, max_inflight: int = 64,
          max_restarts: int | None = None, tuning: Tuning | None = None, mode: str = "transformer") -> int:
    from . import transformer

    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: expected one of {BACKENDS}")
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: expected one of {MODES}")
    if mode == "ensemble" and backend != "triton":
        raise ConfigError("--mode ensemble runs the whole request inside Triton: it needs --backend triton")
    tuning = tuning or Tuning()
    repo = Path(repo)
    if not (repo / "lesion-classifier" / "serving.json").is_file():
        raise MissingInputError(f"{repo}: no lesion-classifier model (run `tailsynth export --model MODEL_DIR --out {repo}`)")
    from .integrity import verify_repository

    verify_repository(repo)  # the exported bytes or nothing; checked again before every reload and restart
    records = str(records) if records else str(repo / "predictions.jsonl")
    proj = repo / "lesion-classifier" / "embedding.npz"
    common = dict(port=port, token=token, records=records, limits=limits,
                  embedding=str(proj) if proj.is_file() else None, admin_token=admin_token,
                  repository_control=repository_control, max_inflight=max_inflight)
    sock, workers = None, []

    def start_workers(predictor: str) -> None:
        # More than one worker: this process binds its SO_REUSEPORT socket before the others start.
        nonlocal sock, workers
        if tuning.workers > 1:
            sock = transformer.reuse_port_socket("127.0.0.1", port)
            workers = _start_workers(tuning.workers - 1, backend, predictor, common, tuning)

    try:
        if backend == "onnxruntime":
            start_workers(str(repo))
            return transformer.run(backend="onnxruntime", repo=str(repo), tuning=tuning, sock=sock, **common)
        cfg = (repo / "lesion-classifier" / "config.pbtxt").read_text()
        if 'backend: "python"' not in cfg:
            raise ConfigError(f"{repo}: exported for the cluster (onnxruntime_onnx platform); the local Triton binary "
                              "has only the python backend: export with --target local, or serve with --backend "
                              "onnxruntime")
        from .triton import TritonSupervisor

        if max_restarts is None:
            max_restarts = int(os.environ.get("TAILSYNTH_TRITON_MAX_RESTARTS", "3"))
        if mode == "ensemble":
            from .ensemble import serve_ensemble

            if tuning.workers > 1 or triton_port:
                raise ConfigError("--mode ensemble: Triton itself listens on --port; --workers and --triton-port "
                                  "apply to the transformer mode only")
            return serve_ensemble(repo, port=port, token=token, records=records, admin_token=admin_token,
                                  repository_control=repository_control, max_restarts=max_restarts)
        # Only the classifier: the ensemble's models are the other mode's (its postprocess needs a records file).
        sup = TritonSupervisor(repo, http_port=triton_port, max_restarts=max_restarts, models=["lesion-classifier"])
        print(f"triton ready on {sup.tp.url} (log {sup.tp.log_path})", file=sys.stderr, flush=True)
        predictor = f"127.0.0.1:{sup.tp.http_port}"
        try:
            start_workers(predictor)
            return transformer.run(backend="triton", predictor_host=predictor, recover=sup.recover, tuning=tuning,
                                   sock=sock, **common)
        finally:
            _stop_workers(workers)
            workers = []
            sup.stop()
    finally:
        _stop_workers(workers)
        if sock is not None:
            sock.close()
