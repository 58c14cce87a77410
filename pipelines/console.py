"""The terminal of a local run: one line per task and the progress of long stages; the rest goes to a log file.

KFP's local runner prints every task's executor input and outputs (JSON), its own logging and the task's whole
streamed output, all through `print` and a logging handler bound to `sys.stdout`, from several threads at once
(ParallelFor iterations). `RunConsole` swaps `sys.stdout`/`sys.stderr` for a router that writes every line to
RUN_DIR/logs/pipeline.log and lets only the tasks' progress lines through, and wraps the runner's task entry points
to learn which task each thread runs, how long it took and how it ended. A failed task's last lines and the log's
path are printed where the failure happens.
"""

from __future__ import annotations

import builtins
import collections
import inspect
import io
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from tailsynth.progress import LINE_PATTERN, NOTICE_PREFIX

LOG_FILE = Path("logs") / "pipeline.log"
TAIL_LINES = 40
PIPE_EVERY_S = 60.0
_SHARD_WIDTH = len(" [shard 00]")

# The runner's own log records ("12:48:44.065 - INFO - Task 'x' finished ..."), its separators and the executor's
# records ("[KFP Executor 2026-12-03 12:48:40,051 INFO]: Looking for component ..."): not the task's output, so they
# stay out of a failed task's tail.
_RUNNER_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3} - [A-Z]+ - |-{20,}$|\[KFP Executor [^]]*\]: )")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    """TEXT without the runner's colour codes (its messages end up in error lines and files)."""
    return _ANSI.sub("", text)


def shard_suffix(resource_parts) -> str:
    """' [shard N]' when a task ran inside iteration N of a ParallelFor (a `...-iteration-N` path part), else ''."""
    for part in resource_parts:
        if "-iteration-" in part:
            return f" [shard {part.rsplit('-', 1)[-1]}]"
    return ""


@dataclass
class _Task:
    label: str
    started: float = field(default_factory=time.monotonic)
    executed: bool = False  # False at the end means the task cache supplied its outputs
    streaming: bool = False  # while the task's process runs: what the thread prints then is that process's output
    progress_shown: float = float("-inf")
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    indent: int | None = None  # the runner's indent of the task's output, taken off its tail
    _json_end: str | None = None

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def keep(self, line: str) -> None:
        """LINE for the tail if the task's process printed it and it is not the executor's: its log records and the
        executor input it dumps as indented JSON (from a bare `{` to the `}` at the same indent)."""
        if not self.streaming:
            return
        lead = len(line) - len(line.lstrip(" "))
        if self.indent is None:  # the process's first line, its executor's "Looking for component ..."
            self.indent = lead
        if self._json_end is not None:
            if line.rstrip() == self._json_end:
                self._json_end = None
            return
        text = line.strip()
        if text == "{":
            self._json_end = line.rstrip().replace("{", "}")
            return
        if _RUNNER_LINE.match(text):
            return
        self.tail.append(line[min(lead, self.indent):].rstrip())


class _Terminal:
    """The user's stream. On a terminal, progress redraws one line in place; elsewhere (CI, a pipe) each progress
    line the task printed is a line."""

    def __init__(self, stream):
        self.stream = stream
        isatty = getattr(stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self._live = False

    def line(self, text: str) -> None:
        self._clear_live()
        self.stream.write(text + "\n")
        self.stream.flush()

    def progress(self, text: str) -> None:
        if not self.interactive:
            self.line(text)
            return
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._live = True

    def _clear_live(self) -> None:
        if self._live:
            self.stream.write("\r\x1b[K")
            self._live = False


def _with_bar(progress_line: str) -> str:
    m = LINE_PATTERN.match(progress_line)
    if m is None or "[" in progress_line[m.end("desc"):m.start("done")]:
        return progress_line
    n = int(24 * min(100, int(m["pct"])) / 100)
    return f"{progress_line[:m.start('done')]}[{'#' * n}{'.' * (24 - n)}] {progress_line[m.start('done'):]}"


class _Router(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr during the run: complete lines, per thread (threads write halves of a
    line: the runner's indent, then the text), go to the log, to the tail of the thread's task, and, when they are
    progress lines, to the terminal."""

    def __init__(self, console: RunConsole):
        self.console = console
        self._partial = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        pending = getattr(self._partial, "text", "") + s
        *lines, self._partial.text = pending.split("\n")
        for line in lines:
            self.console.route(line)
        return len(s)

    def flush(self) -> None:
        self.console.flush_log()

    def finish(self) -> None:
        """Route what this thread wrote after its last newline."""
        rest = getattr(self._partial, "text", "")
        self._partial.text = ""
        if rest:
            self.console.route(rest)


class RunConsole:
    """`with RunConsole(run_dir, labels): <run the pipeline>`; LABELS is {component: display name (arm)} from
    `pipelines.local.stage_labels`."""

    def __init__(self, run_dir: str | Path, labels: dict[str, str] | None = None, terminal=None):
        self.log_path = Path(run_dir) / LOG_FILE
        self.labels = labels or {}
        self.width = max([len(v) for v in self.labels.values()] + [24]) + _SHARD_WIDTH
        self.terminal = _Terminal(terminal if terminal is not None else sys.stderr)
        self.failed: list[str] = []
        self._lock = threading.RLock()
        self._current = threading.local()
        self._log = None
        self._router: _Router | None = None
        self._saved: tuple = ()

    # -- the run ------------------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        from kfp.local import subprocess_task_handler
        from kfp.local.orchestrator import task_executor

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8", buffering=1)
        self.say(f"tasks of this run below; the local runner's full output: {self.log_path}")
        self._router = router = _Router(self)
        # builtins.print too: the runner's indenting print is swapped in and out by concurrent threads and can be
        # left installed after a ParallelFor, indenting everything printed after the run.
        self._saved = (sys.stdout, sys.stderr, builtins.print, task_executor.execute_single_task,
                       subprocess_task_handler.run_local_subprocess)
        task_executor.execute_single_task = self._watch_task(task_executor.execute_single_task)
        subprocess_task_handler.run_local_subprocess = self._watch_process(subprocess_task_handler.run_local_subprocess)
        sys.stdout = sys.stderr = router
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from kfp.local import subprocess_task_handler
        from kfp.local.orchestrator import task_executor

        self._router.finish()
        (sys.stdout, sys.stderr, builtins.print, task_executor.execute_single_task,
         subprocess_task_handler.run_local_subprocess) = self._saved
        if exc is not None and not self.failed:  # a failure outside any task: the runner's own error
            self.say(f"the run failed ({type(exc).__name__}); the local runner's full output: {self.log_path}")
        self._log.close()

    # -- output -------------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """A line for the user: on the terminal and in the log."""
        with self._lock:
            self.terminal.line(text)
            if self._log is not None and not self._log.closed:
                self._log.write(text + "\n")

    def route(self, line: str) -> None:
        task = getattr(self._current, "task", None)
        with self._lock:
            self._log.write(line + "\n")
            text = line.strip()
            if task is not None and text:
                task.keep(line)
            if text.startswith(NOTICE_PREFIX):  # a stage's line for the user
                label = task.label if task is not None else "run"
                self.terminal.line(f"  {label} | {text[len(NOTICE_PREFIX):]}")
                return
            progress = LINE_PATTERN.match(text)
            if progress and self._show_progress(task, progress):
                bar = _with_bar(text) if self.terminal.interactive else text
                self.terminal.progress(f"  {task.label} | {bar}" if task is not None else f"  {bar}")

    def _show_progress(self, task: _Task | None, progress: re.Match) -> bool:
        """On a terminal every update redraws the same line; elsewhere each shown line is a line for good, so a
        task's progress is shown at most every PIPE_EVERY_S seconds, and when a loop completes."""
        if self.terminal.interactive or task is None or progress["done"] == progress["total"]:
            return True
        now = time.monotonic()
        if now - task.progress_shown < PIPE_EVERY_S:
            return False
        task.progress_shown = now
        return True

    def flush_log(self) -> None:
        with self._lock:
            if self._log is not None and not self._log.closed:
                self._log.flush()

    # -- tasks --------------------------------------------------------------------------------------------------
    def label(self, component: str, pipeline_resource_name: str) -> str:
        name = component.removeprefix("comp-")
        return self.labels.get(name, name) + shard_suffix(Path(pipeline_resource_name).parts)

    def _watch_task(self, execute_single_task):
        signature = inspect.signature(execute_single_task)

        def watched(*args, **kwargs):
            call = signature.bind(*args, **kwargs).arguments
            task = _Task(self.label(call["task_spec"].component_ref.name, call["pipeline_resource_name"]))
            self._current.task = task
            try:
                outputs, task_status = execute_single_task(*args, **kwargs)
            except BaseException as e:
                self._report_failure(task, f" ({type(e).__name__}: {plain(str(e))})")
                raise
            finally:
                self._current.task = None
            if task_status.name == "SUCCESS":
                self.say(f"  {task.label:<{self.width}} " + (f"{task.seconds():7.1f} s" if task.executed
                                                              else "  cached"))
            else:
                self._report_failure(task)
            return outputs, task_status

        return watched

    def _watch_process(self, run_local_subprocess):
        def run(*args, **kwargs):
            task = getattr(self._current, "task", None)
            if task is None:
                return run_local_subprocess(*args, **kwargs)
            task.executed = task.streaming = True
            try:
                return run_local_subprocess(*args, **kwargs)
            finally:
                task.streaming = False

        return run

    def _report_failure(self, task: _Task, why: str = "") -> None:
        with self._lock:
            self.failed.append(task.label)
            self.say(f"  {task.label:<{self.width}} FAILED after {task.seconds():.1f} s{why}; its last lines:")
            for text in task.tail:
                self.say(f"    | {text}")
            self.say(f"  the local runner's full output: {self.log_path}")
