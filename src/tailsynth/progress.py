"""Progress for long loops: a live bar with rate and ETA on a terminal, plain periodic lines elsewhere.

CI logs and KFP task logs are not terminals; a carriage-return bar there becomes thousands of lines, so
non-interactive output gets one line every `every_s` seconds and one at the end.
"""

from __future__ import annotations

import re
import sys
import time

# A line a stage prints for the user (a class the synthesizer gate stopped, a selection short of its dose): the local
# run's terminal shows it, where it hides the rest of a task's output.
NOTICE_PREFIX = "notice: "


def notice(text: str) -> None:
    print(NOTICE_PREFIX + text, flush=True)


# What `Progress.line()` writes, so that a reader of a task's output (the local pipeline run's terminal) can pick the
# progress lines out of everything else the task prints. Kept beside `line()`, and a test holds them together.
LINE_PATTERN = re.compile(r"^(?P<desc>\S.*?): (?:\[[#.]+\] )?(?P<done>\d+)/(?P<total>\d+) \S+ \((?P<pct>\d+)%\) "
                          r"[\d.]+ \S+/s elapsed ")


def is_progress_line(text: str) -> bool:
    return LINE_PATTERN.match(text.strip()) is not None


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """`update(done, **fields)` with the absolute count done; `close()` prints the final line."""

    def __init__(self, total: int, desc: str, start: int = 0, unit: str = "it", every_s: float = 30.0,
                 stream=None, interactive: bool | None = None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.start = self.done = int(start)
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.every_s = every_s if not self.interactive else 0.2
        self.t0 = time.monotonic()
        self._last = -1e9
        self.fields: dict = {}

    def rate(self) -> float:
        dt = time.monotonic() - self.t0
        return (self.done - self.start) / dt if dt > 0 else 0.0

    def eta_s(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 else None

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = self.eta_s()
        extra = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.fields.items())
        bar = ""
        if self.interactive:
            n = int(24 * pct / 100)
            bar = "[" + "#" * n + "." * (24 - n) + "] "
        return (f"{self.desc}: {bar}{self.done}/{self.total} {self.unit} ({pct:.0f}%) "
                f"{self.rate():.2f} {self.unit}/s elapsed {_clock(time.monotonic() - self.t0)} "
                f"eta {_clock(eta) if eta is not None else '?'}" + (f" {extra}" if extra else ""))

    def update(self, done: int, **fields) -> None:
        self.done = int(done)
        self.fields.update(fields)
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._emit(final=False)

    def _emit(self, final: bool) -> None:
        if self.interactive:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._emit(final=True)
