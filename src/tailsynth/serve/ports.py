"""Loopback port and readiness helpers shared by the launchers and tests."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ready(url: str, process=None, timeout: float = 60.0, headers: dict | None = None) -> None:
    """Poll URL until it answers 200; fail early when the server process has already exited."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with code {process.returncode} before {url} was ready")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            last = str(e)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s ({last})")


def stop_process(proc: subprocess.Popen, timeout: float = 40.0) -> int | None:
    """SIGTERM (a clean shutdown: a server stops what it started), then SIGKILL after TIMEOUT; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
