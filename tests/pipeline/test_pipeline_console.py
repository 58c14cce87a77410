"""The local run's terminal (pipelines/console.py) through KFP's real SubprocessRunner, on two-task pipelines of
small components: one line per task, progress lines through, the runner's JSON in the log, a failure's tail."""

# No `from __future__ import annotations`: KFP reads the components' annotations as types.
import builtins
import io
import re
import sys

import pytest
from kfp import dsl, local

from pipelines.console import LOG_FILE, RunConsole
from tailsynth.progress import Progress, is_progress_line


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def chatty(n: int) -> int:
    import sys

    from tailsynth.progress import Progress

    print("a chatty line nobody needs on the terminal")
    bar = Progress(n, "count", unit="it", stream=sys.stdout, interactive=False)
    for i in range(1, n + 1):
        bar.update(i)
    bar.close()
    return n


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def boom(n: int) -> int:
    print(f"working on {n}")
    raise ValueError(f"boom {n}")


@dsl.pipeline(name="console-ok")
def two_chatty(n: int = 3):
    first = chatty(n=n)
    chatty(n=first.output)


@dsl.pipeline(name="console-boom")
def chatty_then_boom(n: int = 3):
    boom(n=chatty(n=n).output)


LABELS = {"chatty": "chatty (arm-a)", "chatty-2": "chatty (arm-b)"}


@pytest.fixture
def runner(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    return tmp_path


def task_line(label: str) -> re.Pattern:
    return re.compile(rf"^  {re.escape(label)} +\d+\.\d s$")


def test_progress_pattern_matches_what_progress_writes():
    for interactive in (False, True):
        out = io.StringIO()
        bar = Progress(10, "train classifier (resnet18)", unit="step", stream=out, interactive=interactive)
        bar.update(4, epoch=1, loss=2.25)
        bar.close()
        lines = [line for line in out.getvalue().replace("\r", "\n").splitlines() if line]
        assert lines and all(is_progress_line(line) for line in lines)
    assert not is_progress_line("epoch 1/10 loss 1.99 val bacc 0.20 (2.0s, 103.3 img/s)")
    assert not is_progress_line('    "outputFile": "/tmp/run/executor_output.json"')


def test_one_line_per_task_and_the_json_in_the_log(runner):
    terminal = io.StringIO()
    before = (sys.stdout, sys.stderr, builtins.print)
    with RunConsole(runner / "run", LABELS, terminal=terminal):
        two_chatty(n=3)
    assert (sys.stdout, sys.stderr, builtins.print) == before
    lines = terminal.getvalue().splitlines()
    log = (runner / "run" / LOG_FILE).read_text()
    assert str(runner / "run" / LOG_FILE) in lines[0]
    assert [bool(task_line("chatty (arm-a)").match(x)) for x in lines[1:]].count(True) == 1
    assert [bool(task_line("chatty (arm-b)").match(x)) for x in lines[1:]].count(True) == 1
    # Each task's progress shows on the terminal (first update and the end), labelled with its task.
    progress = [x for x in lines if " | count: " in x]
    assert len(progress) == 4 and all(is_progress_line(x.split(" | ", 1)[1]) for x in progress)
    assert progress[0].startswith("  chatty (arm-a) | count: 1/3 it") and "3/3 it (100%)" in progress[-1]
    assert len(lines) == 1 + 2 + len(progress)
    assert "Got executor_input" in log and '"parameterValues"' in log
    assert "a chatty line nobody needs on the terminal" in log and "finished with status" in log
    assert "executor_input" not in terminal.getvalue() and "{" not in terminal.getvalue()


def test_a_failing_task_prints_its_tail_and_the_log_path(runner):
    terminal = io.StringIO()
    console = RunConsole(runner / "run", {"boom": "boom (arm-b)"}, terminal=terminal)
    with pytest.raises(RuntimeError, match="boom"), console:
        chatty_then_boom(n=7)
    assert console.failed == ["boom (arm-b)"]
    shown = terminal.getvalue()
    lines = shown.splitlines()
    failed = next(i for i, x in enumerate(lines) if x.startswith("  boom (arm-b)"))
    assert "FAILED after" in lines[failed] and "chatty" in lines[failed - 1]
    tail = [x.removeprefix("    | ") for x in lines[failed + 1:] if x.startswith("    | ")]
    assert "working on 7" in tail and "ValueError: boom 7" in tail and "Traceback (most recent call last):" in tail
    # The runner's records and the executor input it dumps are not the task's output.
    assert not any("finished with status" in x or '"outputFile"' in x or "KFP Executor" in x for x in tail)
    assert "  File " in "\n".join(tail)  # the traceback keeps its own indentation
    assert lines[-1] == f"  the local runner's full output: {runner / 'run' / LOG_FILE}"
    assert "ValueError: boom 7" in (runner / "run" / LOG_FILE).read_text()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(written: str) -> list[str]:
    """What a terminal shows after WRITTEN: each line is what follows its last carriage return + erase-line."""
    return [line.rsplit("\r\x1b[K", 1)[-1] for line in written.split("\n")]


def test_on_a_terminal_progress_redraws_one_line_in_place(runner):
    terminal = Tty()
    with RunConsole(runner / "run", LABELS, terminal=terminal):
        two_chatty(n=3)
    written = terminal.getvalue()
    assert written.count("\r\x1b[K  chatty (arm-a) | count: ") == 2  # both updates, drawn over each other
    assert "count: [" + "#" * 24 + "] 3/3 it (100%)" in written  # drawn as a bar
    shown = [line for line in screen(written) if line]
    # Once a task ends, its line replaces its bar: the screen holds the log's path and one line per task.
    assert len(shown) == 3 and task_line("chatty (arm-a)").match(shown[1]) and task_line("chatty (arm-b)").match(
        shown[2])
