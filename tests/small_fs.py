"""A small real filesystem that a test can fill and empty: a tmpfs mounted for the test (needs root and a kernel
that lets this process mount; `small_fs_or_skip` says which is missing), and a filler file that takes its space.

Used by the record-fault tests and by benchmarks/fault_drill.py (the disk-full soak)."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


class CannotMount(RuntimeError):
    """No small filesystem here; the message says why (for a skip reason)."""


@contextmanager
def small_fs(size_kb: int, parent: str | Path | None = None):
    """A fresh tmpfs of SIZE_KB, mounted on a temporary folder for the with-block and unmounted after."""
    if os.geteuid() != 0:
        raise CannotMount("mounting a tmpfs needs root (the disk-full tests fill a small real filesystem)")
    point = Path(tempfile.mkdtemp(prefix="tailsynth-smallfs-", dir=parent))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(point)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        point.rmdir()
        raise CannotMount(f"mount -t tmpfs failed here: {(r.stderr or r.stdout).strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)  # busy: detach now, freed later
        point.rmdir()


class Filler:
    """Takes every free byte of the filesystem holding FOLDER (fill), and gives it back (empty)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "filler.bin"

    def fill(self) -> int:
        """Write zeros until the filesystem refuses (ENOSPC); returns the bytes taken."""
        chunk, taken = b"\0" * 65536, 0
        with open(self.path, "ab", buffering=0) as f:
            for size in (65536, 4096, 1):  # big chunks first, then the last pages' slack
                while True:
                    try:
                        taken += f.write(chunk[:size])
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        return taken

    def empty(self) -> None:
        self.path.unlink(missing_ok=True)

    @property
    def full(self) -> bool:
        return self.path.exists()
