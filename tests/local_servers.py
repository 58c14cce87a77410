"""Real local servers for tests: always on 127.0.0.1, on a free port, always stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tailsynth.serve.ports import stop_process  # the one copy; the tests import it from here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]


@contextmanager
def moto_server(timeout: float = 60.0):
    """Start moto's S3-compatible HTTP server; yields its endpoint URL and stops it on exit."""
    port = free_port()
    proc = subprocess.Popen([*moto_server_cmd(), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto_server did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc, 10)
