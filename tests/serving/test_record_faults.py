"""Issue 31: prediction records survive a full disk. Real files and a real small filesystem, no mocks.

A write that fails part-way is cut back to the file's previous length, the next record starts on a clean line,
the server keeps answering, and every failure is counted (sink stats, the ledger beside the records, /metrics)
and logged once per burst."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from small_fs import CannotMount, Filler, small_fs

from tailsynth.predictions import JsonlSink, RecordWriteError, read_jsonl, read_ledger
from tailsynth.serve.records import prediction_record

ROOT = Path(__file__).resolve().parents[2]


def _rec(i: int, pad: int = 0) -> dict:
    r = prediction_record(request_id=f"r{i}", image_sha256=f"{i:064x}", predicted_class="NV",
                          probabilities={"NV": 0.9, "MEL": 0.1}, model_version="v1")
    return {**r, "source": "x" * pad} if pad else r


@pytest.fixture
def tiny_fs(tmp_path):
    try:
        with small_fs(256, tmp_path) as point:
            yield point
    except CannotMount as e:
        pytest.skip(str(e))


_RLIMIT_WRITER = textwrap.dedent('''
    import json, resource, sys
    from tailsynth.predictions import JsonlSink, RecordWriteError, read_ledger
    path, limit = sys.argv[1], int(sys.argv[2])
    sink = JsonlSink(path, ledger=True)
    sink.write([{"i": 0}])
    before = sink.path.stat().st_size
    # Past this size the kernel accepts part of a write() and refuses the rest with EFBIG (SIGXFSZ is ignored
    # by Python): a torn write for real.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        sink.write([{"i": 1, "pad": "x" * 4000}])
        out = {"failed": None}
    except RecordWriteError as e:
        out = {"failed": e.errno_name, "rolled_back": e.rolled_back, "records": e.records}
    out["size_before"], out["size_after_failure"] = before, sink.path.stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    for _ in range(10):  # RECOVERY_WRITES in a row: the ledger notes the recovery
        sink.write([{"i": 2}])
    out["stats"] = vars(sink.stats)
    out["ledger"] = read_ledger(path)
    print(json.dumps(out))
''')


def test_torn_write_past_rlimit_fsize_is_rolled_back_and_next_record_lands_on_a_clean_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    r = subprocess.run([sys.executable, "-c", _RLIMIT_WRITER, str(path), "2000"], capture_output=True, text=True,
                       check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["failed"] == "EFBIG" and out["rolled_back"] and out["records"] == 1
    assert out["size_after_failure"] == out["size_before"]  # the 1,990 bytes that went in were cut back
    assert [json.loads(x)["i"] for x in path.read_text().splitlines()] == [0] + [2] * 10
    assert out["stats"]["failed_writes"] == 1 and out["stats"]["written_records"] == 11
    assert out["ledger"]["failed_writes"] == 1 and out["ledger"]["failed_records"] == 1
    assert out["ledger"]["last_errno"] == "EFBIG" and out["ledger"]["recovered_at"] >= out["ledger"]["last_failure_at"]


def test_full_filesystem_loses_no_earlier_record_and_counts_every_failed_write(tiny_fs):
    path = tiny_fs / "predictions.jsonl"
    sink = JsonlSink(path, ledger=True)
    sink.write([_rec(i) for i in range(5)])
    filler = Filler(tiny_fs)
    filler.fill()
    written, failed = 5, 0
    for i in range(5, 40):  # batches of 3 records, ~2 KB: the last page's slack takes a few, then ENOSPC
        size = path.stat().st_size
        try:
            sink.write([_rec(i * 10 + k, pad=500) for k in range(3)])
            written += 3
        except RecordWriteError as e:
            assert e.errno_name == "ENOSPC" and e.rolled_back
            assert path.stat().st_size == size  # all or nothing
            assert path.read_bytes().endswith(b"\n")
            failed += 1
    assert failed >= 20
    filler.empty()
    sink.write([_rec(999)])
    written += 1
    back = read_jsonl(path)
    assert len(back) == written and not back.skipped
    assert [r["request_id"] for r in back[:5]] == [f"r{i}" for i in range(5)]
    assert sink.stats.failed_writes == failed and sink.stats.failed_records == 3 * failed
    led = read_ledger(path)
    assert (led["failed_writes"], led["failed_records"], led["last_errno"]) == (failed, 3 * failed, "ENOSPC")


def test_a_torn_tail_left_by_an_older_writer_is_ended_before_the_next_record(tmp_path):
    path = tmp_path / "predictions.jsonl"
    good = json.dumps(_rec(1), separators=(",", ":"))
    path.write_text(good + "\n" + good[:57])  # what a write cut short by a full disk left before issue 31
    sink = JsonlSink(path)
    sink.write([_rec(2)])
    lines = path.read_text().splitlines()
    assert lines[1] == good[:57] and json.loads(lines[2])["request_id"] == "r2"
    assert sink.stats.torn_tails_closed == 1
    back = read_jsonl(path)
    assert [r["request_id"] for r in back] == ["r1", "r2"]
    assert len(back.skipped) == 1 and str(back.skipped[0]).startswith(f"{path}:2: not valid JSON")
    sink.write([_rec(3)])  # its own tail: no second newline
    assert sink.stats.torn_tails_closed == 1 and len(path.read_text().splitlines()) == 4


def test_writers_in_several_processes_roll_back_only_their_own_write(tmp_path):
    """Processes sharing the file (`--workers N`) lock around write and rollback: one writer's failure never cuts
    another's records. The limited writer fails past 3,000 bytes while the other appends freely."""
    path = tmp_path / "predictions.jsonl"
    code = textwrap.dedent('''
        import resource, sys
        from tailsynth.predictions import JsonlSink, RecordWriteError
        path, tag, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
        if limit:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        sink, failed = JsonlSink(path), 0
        for i in range(300):
            try:
                sink.write([{"w": tag, "i": i, "pad": "y" * 200}])
            except RecordWriteError:
                failed += 1
        print(failed)
    ''')
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), tag, limit], stdout=subprocess.PIPE,
                              text=True) for tag, limit in (("free", "0"), ("limited", "3000"))]
    failed = {tag: int(p.communicate(timeout=120)[0]) for tag, p in zip(("free", "limited"), procs)}
    lines = [json.loads(x) for x in path.read_text().splitlines()]  # every line whole
    free = [r["i"] for r in lines if r["w"] == "free"]
    limited = [r for r in lines if r["w"] == "limited"]
    assert failed["free"] == 0 and free == list(range(300))
    assert failed["limited"] == 300 - len(limited) and failed["limited"] > 0


# ---- a real server whose records' filesystem fills and empties ----------------------------------------------
def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                     if line.startswith("tailsynth_record"))}


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_transformer_answers_on_a_full_disk_and_exposes_the_failures(server_cls, local_repo, tiny_fs, tmp_path):
    from serving_checks import post, v1_body

    records = tiny_fs / "predictions.jsonl"
    s = server_cls(local_repo, "onnxruntime", "s3cret", records, log_dir=tmp_path).wait_ready()
    filler = Filler(tiny_fs)
    try:
        codes = [post(s.url, v1_body([_png(i)]), s.token)[0] for i in range(3)]
        filler.fill()
        codes += [post(s.url, v1_body([_png(i)]), s.token)[0] for i in range(3, 33)]
        full = _metrics(s.url)
        filler.empty()
        codes += [post(s.url, v1_body([_png(i)]), s.token)[0] for i in range(33, 45)]
        after = _metrics(s.url)
    finally:
        rc = s.stop()
        filler.empty()
    assert codes == [200] * 45 and rc == 0
    back = read_jsonl(records)
    failed = int(after["tailsynth_record_write_failures_total"])
    assert failed >= 10 and not back.skipped
    assert len(back) + failed == 45  # one record per request: each one either whole in the file or counted
    assert after["tailsynth_records_dropped_total"] == failed and after["tailsynth_records_written_total"] == len(back)
    assert full["tailsynth_record_writes_failing"] == 1 and after["tailsynth_record_writes_failing"] == 0
    assert read_ledger(records)["failed_writes"] == failed
    log = s.log()
    assert log.count("failed with ENOSPC") == 1, log[-3000:]  # one line per burst, naming file and errno
    assert f"write to {records} failed with ENOSPC" in log
    assert f"writing to {records} again after {failed} failed write(s)" in log
    assert "Traceback" not in log


@pytest.mark.triton
def test_ensemble_failures_reach_the_serve_log_and_the_ledger(triton_env, server_cls, local_repo, tiny_fs,
                                                              tmp_path):
    from serving_checks import ensemble_infer

    records = tiny_fs / "predictions.jsonl"
    s = server_cls(local_repo, "triton", "s3cret", records, extra=("--mode", "ensemble"), log_dir=tmp_path).wait_ready()
    filler = Filler(tiny_fs)
    try:
        codes = [ensemble_infer(s.url, s.token, [_png(i)])[0] for i in range(3)]
        filler.fill()
        codes += [ensemble_infer(s.url, s.token, [_png(i)])[0] for i in range(3, 33)]
        time.sleep(2.5)  # the launcher polls the ledger every second
        filler.empty()
        codes += [ensemble_infer(s.url, s.token, [_png(i)])[0] for i in range(33, 45)]
        time.sleep(2.5)
    finally:
        rc = s.stop()
        filler.empty()
    assert codes == [200] * 45 and rc == 0
    back = read_jsonl(records)
    led = read_ledger(records)
    assert led["failed_writes"] >= 10 and not back.skipped and len(back) + led["failed_records"] == 45
    log = s.log()  # the serve log, not Triton's temporary one
    assert log.count(f"writes to {records} are failing (ENOSPC") == 1, log[-3000:]
    assert f"writing to {records} again" in log
    assert f"{led['failed_writes']} write(s) failed during this run, {led['failed_records']} records dropped" in log


def test_a_flapping_disk_is_one_burst_in_the_log():
    """On a nearly full disk a small record can fit between failures: that is no recovery, and no new line."""
    from tailsynth.serve.records import WriteFailureLog

    lines, now = [], [0.0]
    burst = WriteFailureLog(lambda level, message: lines.append((level, message)), clock=lambda: now[0])
    err = RecordWriteError(Path("p.jsonl"), OSError(28, "No space left on device"), 2, True)
    for _ in range(30):
        burst.failed(err)
        burst.succeeded("p.jsonl")
    assert len(lines) == 1 and lines[0][0] == "error" and "p.jsonl failed with ENOSPC" in lines[0][1]
    now[0] = 61.0
    burst.failed(err)  # a minute into the burst: one reminder
    assert len(lines) == 2 and "still failing (ENOSPC): 31 writes, 62 records dropped in 61s" in lines[1][1]
    for _ in range(10):
        burst.succeeded("p.jsonl")
    assert len(lines) == 3 and lines[2][0] == "warning"
    assert "writing to p.jsonl again after 31 failed write(s) (62 records dropped) over 61s" in lines[2][1]
