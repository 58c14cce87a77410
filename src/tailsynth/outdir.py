"""One writer per output folder.

A command that writes a folder claims it first: `with claim(out, stage): ...` takes an exclusive `fcntl.flock` on
OUT/.tailsynth.lock for as long as the block runs. A second writer is refused at once with an error naming the
folder and the holder (PID, command, start time, which the holder writes into the lock file). The kernel drops a
flock when its holder dies, so a lock left by a killed process is recovered by the next claim without any
clean-up; the stale file's contents are simply overwritten.

A claim also refuses a folder that already holds a *finished* run of the same stage (its entry in the run record,
`runinfo.RUN_FILE`, or a file only a finished run writes) unless the caller overwrites it on purpose or resumes it;
a run that failed or was killed part-way is not finished and may be run again.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, OutputBusyError

LOCK_FILE = ".tailsynth.lock"
# Run-record statuses of a stage that did not finish (pipeline runs record "running" first).
UNFINISHED = ("running", "failed")


def current_command() -> str:
    """This process's command line, shortened to the program's name (what the busy error shows)."""
    argv = list(sys.argv) or ["python"]
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def read_holder(out: str | Path) -> dict:
    """What the lock file of OUT says about its (last) holder; {} when there is none or it cannot be read."""
    try:
        return json.loads((Path(out) / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def finished_stage(out: str | Path, stage: str, done_file: str | None = None) -> str | None:
    """Why OUT counts as holding a finished STAGE run (a short reason), or None when it does not."""
    from .runinfo import RUN_FILE, read_run

    import yaml

    out = Path(out)
    try:
        run = read_run(out)
        entry = (run.get("stages") or {}).get(stage) if isinstance(run, dict) else None
    except (OSError, yaml.YAMLError):  # an unreadable run record is not proof of a finished run
        entry = None
    if isinstance(entry, dict) and entry.get("status") not in UNFINISHED:
        return f"{RUN_FILE} records a finished `{stage}` run" + (f" at {entry['at']}" if entry.get("at") else "")
    if done_file and (out / done_file).exists():
        return f"{done_file} is there"
    return None


def _mkdir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"--out {out}: a file is in the way (expected a folder)") from None
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None


def _busy(out: Path) -> OutputBusyError:
    h = read_holder(out)
    who = f"pid {h.get('pid', '?')}"
    if h.get("host") and h["host"] != socket.gethostname():
        who += f" on {h['host']}"
    details = ", ".join(x for x in (f"`{h['command']}`" if h.get("command") else "",
                                    f"since {h['started']}" if h.get("started") else "") if x)
    return OutputBusyError(f"{out}: another process is writing this folder ({who}{': ' + details if details else ''}); "
                           f"wait for it to finish, or choose another --out (lock: {out / LOCK_FILE})")


def _lock(out: Path) -> int:
    """An fd holding the exclusive flock on OUT/LOCK_FILE. The releasing holder unlinks the file, so after locking we
    make sure the file we hold is still the one at that path (else another process could lock a new file there)."""
    path = out / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children (PEP 446)
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(out) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _write_holder(fd: int, command: str | None) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or current_command(),
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _release(out: Path, fd: int) -> None:
    # Unlink while still holding the lock (see _lock), so a finished folder keeps no lock file.
    try:
        os.unlink(out / LOCK_FILE)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


@contextmanager
def claim(out: str | Path, stage: str, *, overwrite: bool = False, resume: bool = False,
          done_file: str | None = None, resume_hint: str = "", command: str | None = None) -> Iterator[Path]:
    """Create OUT if needed and hold its lock for the block; yields OUT.

    Refused (OutputBusyError) while another process holds OUT, and (ConfigError) when OUT holds a finished STAGE run
    (see `finished_stage`; DONE_FILE: a file only a finished run leaves) unless OVERWRITE or RESUME is true.
    RESUME_HINT (e.g. "pass --resume to continue it") is added to that error; COMMAND is recorded for the busy error
    of another writer (default: this process's command line)."""
    out = Path(out)
    _mkdir(out)
    fd = _lock(out)
    try:
        if not (overwrite or resume):
            why = finished_stage(out, stage, done_file)
            if why:
                hints = ", ".join(x for x in ("pass --overwrite to write over it", resume_hint) if x)
                raise ConfigError(f"--out {out}: already holds a finished run ({why}); {hints}, or choose another "
                                  "--out")
        _write_holder(fd, command)
        yield out
    finally:
        _release(out, fd)
