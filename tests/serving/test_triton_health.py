"""Health that tells the truth: kill the python-backend stub, then tritonserver itself, behind `tailsynth serve`.

Readiness must turn 503 within 5 s of the predictor dying, the launcher must bring it back (model reload for a
dead stub, a new server for a dead tritonserver, no zombie left), and with no restarts allowed it must exit
non-zero instead of serving errors.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import serving_checks as chk

pytestmark = pytest.mark.triton


def children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, command name, state) of the direct children of PID, from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append((int(d.name), name, fields[0]))
    return out


def tritonserver_pid(server) -> int:
    found = [p for p, name, state in children(server.proc.pid) if name.startswith("tritonserver") and state != "Z"]
    assert len(found) == 1, children(server.proc.pid)
    return found[0]


def ready_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return -1


def wait_for(cond, timeout: float, step: float = 0.1) -> float | None:
    """Seconds until cond() held, or None after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def served(triton_env, local_repo, tmp_path, server_cls):
    servers = []

    def start(mode: str = "transformer", **env):
        s = server_cls(local_repo, "triton", "s3cret", tmp_path / f"p{len(servers)}.jsonl", env=env,
                       extra=("--mode", mode)).wait_ready()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def test_killed_stub_then_killed_tritonserver_recover(served):
    s = served()
    good = chk.jpeg(0)
    want = chk.predict_v1(s.url, [good], s.token)[0]["class"]
    triton = tritonserver_pid(s)
    stubs = [p for p, name, _ in children(triton) if name.startswith("triton_python")]
    assert stubs, children(triton)

    os.kill(stubs[0], signal.SIGKILL)
    t = wait_for(lambda: ready_code(s.url) == 503, 5.0)
    assert t is not None, f"ready stayed {ready_code(s.url)} after the stub was killed\n{s.log()[-3000:]}"
    assert wait_for(lambda: ready_code(s.url) == 200, 90.0, 0.5) is not None, s.log()[-4000:]
    assert chk.predict_v1(s.url, [good], s.token)[0]["class"] == want
    assert tritonserver_pid(s) == triton  # the stub came back without restarting the server

    old_stubs = [p for p, name, _ in children(triton) if name.startswith("triton_python")]
    os.kill(triton, signal.SIGKILL)
    t = wait_for(lambda: ready_code(s.url) == 503, 5.0)
    assert t is not None, f"ready stayed {ready_code(s.url)} after tritonserver was killed\n{s.log()[-3000:]}"
    assert wait_for(lambda: ready_code(s.url) == 200, 120.0, 0.5) is not None, s.log()[-4000:]
    # The killed server's stubs went with it (its process group), not left behind as orphans.
    assert old_stubs and wait_for(lambda: not any(alive(p) for p in old_stubs), 10.0) is not None, old_stubs
    assert chk.predict_v1(s.url, [good], s.token)[0]["class"] == want
    assert tritonserver_pid(s) != triton
    zombies = [c for c in children(s.proc.pid) if c[2] == "Z"]
    assert not zombies, zombies
    assert "restart 1/" in s.log()


def ensemble_answers(s, good: bytes, want: str, times: int = 6) -> bool:
    """TIMES requests in a row answered with WANT (several: each may reach another preprocess instance)."""
    for _ in range(times):
        try:
            code, body = chk.ensemble_infer(s.url, s.token, [good])
        except OSError:  # no server listening (yet)
            return False
        if code != 200 or chk.ensemble_outputs(body)["class"]["data"] != [want]:
            return False
    return True


def test_ensemble_killed_stub_then_killed_tritonserver_recover(served):
    """The ensemble mode has no transformer to turn readiness off, clients reach Triton itself: what counts is
    that the supervisor brings every model back (a reload for a dead stub, a new server for a dead one)."""
    s = served("ensemble")
    good = chk.jpeg(0)
    _, (want,), _ = chk.ensemble_predict(s.url, s.token, [good])
    triton = tritonserver_pid(s)
    stubs = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p, name, _ in children(triton)
             if name.startswith("triton_python")}
    pre = [p for p, cmd in stubs.items() if b"/preprocess/" in cmd]
    assert len(pre) == 2 and len(stubs) == 4, stubs  # two decoders, the classifier, postprocess

    os.kill(pre[0], signal.SIGKILL)
    assert wait_for(lambda: "answers again" in s.log() and ensemble_answers(s, good, want), 60.0, 0.5) is not None, \
        s.log()[-4000:]
    assert tritonserver_pid(s) == triton  # reloaded in place, no server restart
    assert not alive(pre[0])

    os.kill(triton, signal.SIGKILL)
    assert wait_for(lambda: "restart 1/" in s.log() and ensemble_answers(s, good, want), 120.0, 0.5) is not None, \
        s.log()[-4000:]
    assert wait_for(lambda: not any(alive(p) for p in stubs), 10.0) is not None, stubs
    assert tritonserver_pid(s) != triton
    assert not [c for c in children(s.proc.pid) if c[2] == "Z"]


@pytest.mark.parametrize("mode", ["transformer", "ensemble"])
def test_unrecoverable_predictor_exits_non_zero(served, mode):
    s = served(mode, TAILSYNTH_TRITON_MAX_RESTARTS="0")
    os.kill(tritonserver_pid(s), signal.SIGKILL)
    assert wait_for(lambda: ready_code(s.url) in (503, -1), 5.0) is not None
    assert wait_for(lambda: s.proc.poll() is not None, 60.0, 0.5) is not None, s.log()[-3000:]
    assert s.proc.returncode != 0
    assert "giving up" in s.log()
    assert not [c for c in children(s.proc.pid) if c[2] == "Z"]
