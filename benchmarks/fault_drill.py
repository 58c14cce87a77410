"""Fault drill: the endpoint and the pipeline tried as a hostile client and a failing machine would try them.

One line per case, PASS or FAIL, and a markdown table (--out-md). Cases:
  bad inputs (each answered 4xx naming the fault, and a good request answered after each), roles (unload with the
  inference token), pixel bombs (a 32-image bomb batch; 12 parallel bomb requests beside a normal one), header
  floods, request-id flood, wrong method, a soak (N requests at concurrency C, errors and transformer memory before
  and after), a disk-full soak (records on a small tmpfs filled and emptied during N requests: every request
  answered, no torn line, missing records = counted write failures), a killed python-backend stub, a killed tritonserver (ready 503 within 5 s, recovery, no zombie),
  an interrupted pipeline run (re-run with --cache reuses every finished task), and an interrupted `dvc push`
  re-run to identical remote objects (moto S3 server).
The ensemble mode (`--backend ensemble`: `tailsynth serve --mode ensemble`, clients on Triton's own endpoint) gets
the same endpoint cases as v2 BYTES requests to lesion-classifier-e2e, with Triton's answers where they differ
(403 for a missing token, a dropped connection for big headers; serving/README.md, "Ensemble mode"), and the
killed stub / killed tritonserver cases judged by answers (its readiness is Triton's own).

Small setting (seconds to a few minutes; proves the drill):
  python benchmarks/fault_drill.py --soak 200 --concurrency 8 --skip pipeline
Full setting (for docs/results/reliability.md; tens of minutes on 2 cores):
  python benchmarks/fault_drill.py --soak 10000 --concurrency 32 --out-md docs/results/reliability_drill.md
The disk-full soak alone (issue 31):
  python benchmarks/fault_drill.py --backend onnxruntime --skip endpoint,triton-faults,pipeline,dvc \
      --disk-full 10000 --concurrency 16
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = "lesion-classifier"
TOKEN = "drill-token"
RESULTS: list[tuple[str, str, bool, str]] = []  # (group, case, passed, detail)


def record(group: str, case: str, ok: bool, detail: str = "") -> bool:
    RESULTS.append((group, case, bool(ok), detail))
    print(f"{'PASS' if ok else 'FAIL'}  {group:<10} {case:<48} {detail}", flush=True)
    return ok


# ---------------------------------------------------------------- HTTP helpers
def post(url, body: bytes, token=TOKEN, path=f"/v1/models/{MODEL}:predict", headers=None, ctype="application/json",
         timeout=120):
    from tailsynth.serve.client import request_json

    try:
        return request_json(url, path, body, token, content_type=ctype, headers=headers, timeout=timeout)
    except OSError as e:  # refused or timed out: a case result, not a crash of the drill
        return -1, {"error": str(e)}


def get(url, path, token=TOKEN):
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return -1


def v1(images):
    return json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}} for b in images]}).encode()


ENSEMBLE = "lesion-classifier-e2e"
E2E_PATH = f"/v2/models/{ENSEMBLE}/infer"


def v2_bytes(images, request_id: str | None = None) -> tuple[bytes, dict]:
    """(body, headers) of a v2 request with IMAGES as one binary BYTES input `image` [N, 1] (a batch of N files)."""
    import struct

    blob = b"".join(struct.pack("<I", len(b)) + b for b in images)
    head = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images), 1],
                        "parameters": {"binary_data_size": len(blob)}}]}
    if request_id:
        head["id"] = request_id
    h = json.dumps(head).encode()
    return h + blob, {"Inference-Header-Content-Length": str(len(h))}


class Client:
    """The same request against either mode: v1 JSON to the transformer, v2 binary BYTES to the ensemble."""

    def __init__(self, ep, mode: str):
        self.ep, self.mode = ep, mode
        self.infer_path = E2E_PATH if mode == "ensemble" else f"/v1/models/{MODEL}:predict"
        self.model = ENSEMBLE if mode == "ensemble" else MODEL

    def send(self, images, token=TOKEN, headers=None):
        if self.mode == "ensemble":
            body, h = v2_bytes(images)
            return post(self.ep.url, body, token, path=E2E_PATH, headers={**h, **(headers or {})},
                        ctype="application/octet-stream")
        return post(self.ep.url, v1(images), token, headers=headers)

    def top(self, out) -> str | None:
        if self.mode == "ensemble":
            return next((o["data"][0] for o in out.get("outputs", []) if o["name"] == "class"), None)
        return out["predictions"][0]["class"]

    def server_pid(self) -> int:
        """The process whose memory the soak watches: the transformer, or in the ensemble mode Triton itself."""
        if self.mode == "ensemble":
            return next((p for p, n, s in children(self.ep.proc.pid) if n.startswith("tritonserver") and s != "Z"),
                        self.ep.proc.pid)
        return self.ep.proc.pid


def encode(img: np.ndarray | object, fmt="PNG", **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg(seed=0, size=64):
    return encode(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8), "JPEG", quality=90)


def header_bomb_png(side=100_000) -> bytes:
    import struct
    import zlib

    data = bytearray(encode(np.zeros((8, 8), np.uint8)))
    i = data.index(b"IHDR")
    data[i + 4 : i + 12] = struct.pack(">II", side, side)
    data[i + 17 : i + 21] = struct.pack(">I", zlib.crc32(bytes(data[i : i + 17])) & 0xFFFFFFFF)
    return bytes(data)


def one_bit_bomb(side=6300) -> bytes:
    from PIL import Image

    return encode(Image.new("1", (side, side)), optimize=True)


def rss_mb(pid: int) -> float:
    """Resident memory of PID and its descendants except tritonserver (the transformer's own footprint)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[tuple[int, str, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            f = stat[stat.rindex(")") + 2 :].split()
            if int(f[1]) == pid:
                out.append((int(d.name), stat[stat.index("(") + 1 : stat.rindex(")")], f[0]))
    return out


# ---------------------------------------------------------------- server under test
class Endpoint:
    def __init__(self, repo: Path, backend: str, workdir: Path, extra=(), mode: str = "transformer",
                 records: Path | None = None):
        from tailsynth.serve.ports import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # records: elsewhere than the log, e.g. on the small filesystem the disk-full case fills.
        self.records = records or workdir / f"records-{backend}-{self.port}.jsonl"
        self.log_path = workdir / f"serve-{backend}-{self.port}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TAILSYNTH_TOKEN": TOKEN}
        env.pop("TAILSYNTH_ADMIN_TOKEN", None)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tailsynth.cli", "serve", "--repo", str(repo), "--backend",
                                      backend, "--port", str(self.port), "--records", str(self.records),
                                      "--mode", mode, *extra],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        from tailsynth.serve.ports import wait_http_ready

        wait_http_ready(f"{self.url}/v2/health/ready", self.proc, 180)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        from tailsynth.serve.ports import stop_process

        code = stop_process(self.proc, 60)
        self._log.close()
        return code


def make_repo(workdir: Path) -> Path:
    from tailsynth.classify.model import build_backbone, save_classifier
    from tailsynth.export import export_model

    model = workdir / "model"
    save_classifier(build_backbone("resnet18", 7).eval(), model, backbone="resnet18",
                    classes=["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"], resolution=32,
                    config={"fault_drill": "untrained"}, data_revision="fault-drill")
    repo = workdir / "repo"
    export_model(model, repo, "local")
    return repo


# ---------------------------------------------------------------- cases
def bad_input_cases():
    from PIL import Image

    good, jp = jpeg(0), jpeg(1, 128)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), np.float32)).save(buf, format="TIFF")
    gif = io.BytesIO()
    Image.new("RGB", (64, 64)).save(gif, format="GIF")
    return [
        ("non-image bytes", v1([b"%PDF-1.4" * 20]), {}, 400, "not a decodable"),
        ("truncated JPEG", v1([jp[: len(jp) // 2]]), {}, 400, "truncated"),
        ("header bomb 100k x 100k", v1([header_bomb_png()]), {}, 400, "decompression bomb"),
        ("empty image", v1([b""]), {}, 400, "empty image"),
        ("empty batch", v1([]), {}, 400, "empty batch"),
        ("33 images", v1([good] * 33), {}, 400, "exceeds the limit of 32"),
        ("invalid JSON", b'{"instances": [', {}, 400, ""),
        ("not base64", b'{"instances": [{"image_bytes": {"b64": "***"}}]}', {}, 400, "base64"),
        ("wrong v1 shape", b'{"instances": [[1, 2, 3]]}', {}, 400, "image_bytes"),
        ("1x1 image", v1([encode(np.zeros((1, 1, 3), np.uint8))]), {}, 400, "too small"),
        ("float TIFF", v1([buf.getvalue()]), {}, 400, "pixel mode F"),
        ("GIF", v1([gif.getvalue()]), {}, 400, "format GIF"),
        ("no token", v1([good]), {"token": None}, 401, "bearer token"),
        ("wrong token", v1([good]), {"token": "nope"}, 401, "bearer token"),
    ]


def ensemble_bad_input_cases():
    """The same kinds as v2 BYTES requests to the ensemble: (label, body, headers, kw, status, words). Triton 2.51
    answers a body that is not JSON, or JSON without inputs, with 500 before any model runs (its parse errors are
    INTERNAL; triton-inference-server/server#8762): those two cases expect it, so the table says so."""
    from PIL import Image

    good, jp = jpeg(0), jpeg(1, 128)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), np.float32)).save(buf, format="TIFF")
    gif = io.BytesIO()
    Image.new("RGB", (64, 64)).save(gif, format="GIF")

    def b(images):
        return v2_bytes(images)

    bad_dtype = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]})
    return [
        ("non-image bytes", *b([b"%PDF-1.4" * 20]), {}, 400, "not a decodable"),
        ("truncated JPEG", *b([jp[: len(jp) // 2]]), {}, 400, "truncated"),
        ("header bomb 100k x 100k", *b([header_bomb_png()]), {}, 400, "decompression bomb"),
        ("empty image", *b([b""]), {}, 400, "empty image"),
        ("empty batch", *b([]), {}, 400, "string elements"),  # Triton's own refusal, before any model
        ("33 images", *b([good] * 33), {}, 400, "batch-size must be <= 32"),
        ("invalid JSON (Triton 2.51: 500)", b'{"inputs": [', {}, {}, 500, "failed to parse"),
        ("JSON without inputs (Triton 2.51: 500)", b"{}", {}, {}, 500, "inputs"),
        ("wrong datatype", bad_dtype.encode(), {}, {}, 400, "expects 'BYTES'"),
        ("1x1 image", *b([encode(np.zeros((1, 1, 3), np.uint8))]), {}, 400, "too small"),
        ("float TIFF", *b([buf.getvalue()]), {}, 400, "pixel mode F"),
        ("GIF", *b([gif.getvalue()]), {}, 400, "format GIF"),
        ("no token", *b([good]), {"token": None}, 403, "restricted"),
        ("wrong token", *b([good]), {"token": "nope"}, 403, "restricted"),
    ]


def drill_endpoint(ep: Endpoint, backend: str, soak: int, concurrency: int, mode: str = "transformer") -> None:
    g = backend if mode == "transformer" else "ensemble"
    cl = Client(ep, mode)
    good = jpeg(0)
    code, out = cl.send([good])
    if not record(g, "good request", code == 200, f"HTTP {code}"):
        return
    want = cl.top(out)
    if mode == "ensemble":
        cases = [(label, body, {"path": E2E_PATH, "headers": h,
                                "ctype": "application/octet-stream" if h else "application/json", **kw}, status, words)
                 for label, body, h, kw, status, words in ensemble_bad_input_cases()]
    else:
        cases = bad_input_cases()
    for label, body, kw, status, words in cases:
        c, b = post(ep.url, body, **kw)
        c2, o2 = cl.send([good])
        ok = c == status and words.lower() in json.dumps(b).lower() and c2 == 200 and cl.top(o2) == want
        record(g, f"bad input: {label}", ok, f"HTTP {c}; next good request {c2}")
    c, _ = post(ep.url, b"{}", path=f"/v2/repository/models/{cl.model}/unload")
    record(g, "unload with the inference token", c == 403 and cl.send([good])[0] == 200, f"HTTP {c}")
    c = get(ep.url, cl.infer_path)
    record(g, f"GET on {cl.infer_path.rsplit('/', 1)[-1]}", c == 405, f"HTTP {c}")
    c, b = cl.send([good], headers={"X-Pad": "a" * 20000})
    # Triton's HTTP server (libevhtp) drops the connection at its header limit instead of answering 431.
    record(g, "20 KB header", c == 431 or (mode == "ensemble" and c in (-1, 400)), f"HTTP {c}")
    c, b = cl.send([good], headers={"X-Pad": "a" * 16_000_000})
    record(g, "16 MB header", c in (-1, 400, 431) and cl.send([good])[0] == 200, f"HTTP {c}")
    before = ep.records.stat().st_size if ep.records.exists() else 0
    # Triton's HTTP server drops a connection whose header passes ~8 KB (measured: 8,100 bytes pass, 9,000 not), so
    # the ensemble gets the longest id it lets through: what must hold is that the records stay small.
    rid_kb = 10 if mode == "transformer" else 8
    c, b = cl.send([good] * 32, headers={"x-request-id": "r" * (rid_kb * 1000)})
    grew = (ep.records.stat().st_size - before) / 32
    record(g, f"{rid_kb} KB x-request-id x 32 images", c == 200 and grew < 2000,
           f"HTTP {c}; {grew:.0f} record bytes/image")
    # Pixel bombs.
    bomb = one_bit_bomb()
    t0 = time.monotonic()
    c, b = cl.send([bomb] * 32)
    record(g, f"32 x 1-bit {len(bomb) // 1000} KB 6300^2 PNGs", c == 400 and time.monotonic() - t0 < 10,
           f"HTTP {c} in {time.monotonic() - t0:.2f}s")
    codes, lock = [], threading.Lock()

    def send():
        cc, _ = cl.send([bomb])
        with lock:
            codes.append(cc)

    ts = [threading.Thread(target=send) for _ in range(12)]
    for t in ts:
        t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    c, _ = cl.send([good])
    normal = time.monotonic() - t0
    for t in ts:
        t.join(300)
    rss = rss_mb(cl.server_pid())
    record(g, "12 parallel bomb requests + a normal one", c == 200 and normal < 2.0 and set(codes) <= {200, 503},
           f"normal {normal:.2f}s; bombs {sorted(codes)}; {'tritonserver' if mode == 'ensemble' else 'transformer'} "
           f"RSS {rss:.0f} MB")
    # Soak.
    if soak:
        imgs = [jpeg(i) for i in range(16)]
        rss0 = rss_mb(cl.server_pid())
        errors, done, lat = [], [0], []
        lock = threading.Lock()

        def worker(w):
            i = w
            while True:
                with lock:
                    if done[0] >= soak:
                        return
                    done[0] += 1
                t = time.monotonic()
                cc, _ = cl.send([imgs[i % len(imgs)]])
                with lock:
                    lat.append(time.monotonic() - t)
                    if cc != 200:
                        errors.append(cc)
                i += concurrency

        t0 = time.monotonic()
        ws = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
        for w in ws:
            w.start()
        for w in ws:
            w.join()
        wall = time.monotonic() - t0
        rss1 = rss_mb(cl.server_pid())
        record(g, f"soak {soak} requests at concurrency {concurrency}", not errors,
               f"{len(errors)} errors; {soak / wall:.0f} req/s; p99 {np.quantile(lat, 0.99) * 1000:.0f} ms; "
               f"RSS {rss0:.0f} -> {rss1:.0f} MB")
    log = ep.log()
    record(g, "no traceback in the log", "Traceback" not in log, "")


def ready_within(ep: Endpoint, code: int, seconds: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if get(ep.url, "/v2/health/ready", None) == code:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def drill_triton_faults(repo: Path, workdir: Path) -> None:
    g = "triton"
    ep = Endpoint(repo, "triton", workdir)
    try:
        good = jpeg(0)
        tpid = next(p for p, n, s in children(ep.proc.pid) if n.startswith("tritonserver"))
        stub = next(p for p, n, s in children(tpid) if n.startswith("triton_python"))
        os.kill(stub, signal.SIGKILL)
        t = ready_within(ep, 503, 5)
        record(g, "killed stub: ready 503 within 5 s", t is not None, f"{t:.1f}s" if t is not None else "still 200")
        t = ready_within(ep, 200, 120)
        record(g, "killed stub: recovered", t is not None and post(ep.url, v1([good]))[0] == 200,
               f"ready again after {t:.1f}s" if t is not None else "not ready")
        tpid = next(p for p, n, s in children(ep.proc.pid) if n.startswith("tritonserver") and s != "Z")
        os.kill(tpid, signal.SIGKILL)
        t = ready_within(ep, 503, 5)
        record(g, "killed tritonserver: ready 503 within 5 s", t is not None, f"{t:.1f}s" if t is not None else "")
        t = ready_within(ep, 200, 180)
        zombies = [c for c in children(ep.proc.pid) if c[2] == "Z"]
        record(g, "killed tritonserver: restarted, no zombie",
               t is not None and not zombies and post(ep.url, v1([good]))[0] == 200,
               f"ready again after {t:.1f}s; zombies {zombies}" if t is not None else "not ready")
    finally:
        ep.stop()
    env_ep = None
    try:
        os.environ["TAILSYNTH_TRITON_MAX_RESTARTS"] = "0"
        env_ep = Endpoint(repo, "triton", workdir)
        tpid = next(p for p, n, s in children(env_ep.proc.pid) if n.startswith("tritonserver"))
        os.kill(tpid, signal.SIGKILL)
        t0 = time.monotonic()
        while env_ep.proc.poll() is None and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        rc = env_ep.proc.poll()
        record(g, "unrecoverable Triton: serve exits non-zero", rc not in (None, 0), f"exit code {rc}")
    finally:
        os.environ.pop("TAILSYNTH_TRITON_MAX_RESTARTS", None)
        if env_ep is not None:
            env_ep.stop()


def metrics(url: str) -> dict[str, float]:
    """The tailsynth_record* series of the transformer's /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                     if line.startswith("tailsynth_record"))}


class DiskCycle:
    """Fills the records' filesystem at the start of every PERIOD requests and empties it FULL requests later
    (counted in requests, not seconds, so a short drill has as many full periods as a long one)."""

    def __init__(self, filler, period: int, full: int):
        self.filler, self.period, self.full = filler, period, full
        self.periods = 0

    def before_request(self, n: int) -> None:
        if n % self.period == 0:
            self.filler.fill()
            self.periods += 1
        elif n % self.period == self.full:
            self.filler.empty()


def send_all(ep: Endpoint, first: int, count: int, concurrency: int, imgs, on_send=None) -> tuple[list, list]:
    """Requests FIRST..FIRST+COUNT-1 (x-request-id soak-NNNNNN) from CONCURRENCY threads; ON_SEND(i) runs, under
    one lock, before request i (0-based within this call) goes out. Returns (ids sent, non-200 answers)."""
    lock, nxt, ids, errors = threading.Lock(), [0], [], []

    def worker():
        while True:
            with lock:
                i = nxt[0]
                if i >= count:
                    return
                nxt[0] += 1
                if on_send is not None:
                    on_send(i)
            rid = f"soak-{first + i:06d}"
            code, _ = post(ep.url, v1([imgs[(first + i) % len(imgs)]]), headers={"x-request-id": rid})
            with lock:
                ids.append(rid)
                if code != 200:
                    errors.append(code)

    ws = [threading.Thread(target=worker) for _ in range(concurrency)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    return ids, errors


def drill_disk_full(repo: Path, workdir: Path, requests: int, concurrency: int, size_mb: int = 16) -> None:
    """REQUESTS single-image requests against `tailsynth serve --backend onnxruntime` whose records live on a
    small tmpfs that a filler file fills and empties over and over (ENOSPC for real): every request answered,
    every record before and after the full periods readable, nothing torn, and the records that are missing
    exactly the ones the server counted as failed (/metrics, the ledger), logged once per burst."""
    sys.path.insert(0, str(ROOT / "tests"))
    from small_fs import CannotMount, Filler, small_fs

    from tailsynth.predictions import read_jsonl, read_ledger

    g = "disk-full"
    steady = max(100, requests // 20)  # requests before the first full period and after the last one
    middle = requests - 2 * steady
    try:
        with small_fs(size_mb * 1024, workdir) as fs:
            ep = Endpoint(repo, "onnxruntime", workdir, records=fs / "predictions.jsonl")
            filler = Filler(fs)
            cycle = DiskCycle(filler, period=max(50, middle // 12), full=max(20, middle // 36))
            imgs = [jpeg(i) for i in range(16)]
            t0 = time.monotonic()
            try:
                before, e1 = send_all(ep, 0, steady, concurrency, imgs)
                during, e2 = send_all(ep, steady, middle, concurrency, imgs, cycle.before_request)
                filler.empty()
                after, e3 = send_all(ep, steady + middle, steady, concurrency, imgs)
                wall = time.monotonic() - t0
                m = metrics(ep.url)
            finally:
                rc = ep.stop()
                filler.empty()
            errors = e1 + e2 + e3
            back = read_jsonl(ep.records)
            led = read_ledger(ep.records) or {}
            log = ep.log()
    except CannotMount as e:
        record(g, "small filesystem", False, f"not available here: {e}")
        return
    got = [r["request_id"] for r in back]
    have = set(got)
    failed = int(m.get("tailsynth_record_write_failures_total", -1))
    bursts = log.count("failed with ENOSPC")
    record(g, f"{requests} requests, filesystem full {cycle.periods} times", not errors and rc == 0,
           f"{len(errors)} failed requests {sorted(set(errors))[:5]}; {requests / wall:.0f} req/s; exit code {rc}")
    record(g, "records before and after the full periods all there", all(i in have for i in before + after),
           f"{sum(i in have for i in before)}/{len(before)} before, {sum(i in have for i in after)}/{len(after)} "
           f"after; {sum(i in have for i in during)}/{len(during)} during")
    record(g, "no torn line, no record twice", not back.skipped and len(have) == len(got) == len(back),
           f"{len(back)} records read, {len(back.skipped)} lines skipped")
    record(g, "missing records = counted failures",
           failed > 0 and requests - len(back) == failed == led.get("failed_records")
           == m.get("tailsynth_records_dropped_total") and led.get("failed_writes") == failed,
           f"{requests - len(back)} missing; /metrics {failed} failed writes; ledger {led.get('failed_writes')} "
           f"writes, {led.get('failed_records')} records")
    record(g, "one log line per burst", 0 < bursts <= cycle.periods
           and log.count("prediction records: writing to") == bursts and "Traceback" not in log,
           f"{bursts} burst lines for {cycle.periods} full periods")


def drill_pipeline(workdir: Path, data: Path) -> None:
    g = "pipeline"
    out = workdir / "pipeline-run"
    cmd = [sys.executable, "-m", "tailsynth.cli", "pipeline", "run", "--local", "--profile", "tiny", "--data",
           str(data), "--out", str(out), "--cache"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(workdir / "pipeline-first.log", "wb") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        t0 = time.monotonic()
        while p.poll() is None and time.monotonic() - t0 < 40:  # the interruption: killed at 40 s
            time.sleep(0.2)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    done = {s.name.removesuffix(".task.json") for s in (out / ".kfp_cache").glob("*.task.json")}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    info = json.loads((out / "task_cache.json").read_text()) if (out / "task_cache.json").exists() else {}
    ok = r.returncode == 0 and set(info.get("cached_keys", [])) == done and not set(info.get("executed_keys", [])) & done
    record(g, "killed at 40 s, re-run with --cache", ok,
           f"{len(done)} finished before the kill, {len(info.get('cached_tasks', []))} reused, "
           f"{len(info.get('executed_tasks', []))} executed")
    r = subprocess.run([sys.executable, "-m", "tailsynth.cli", "pipeline", "run", "--local", "--profile", "tiny",
                        "--data", str(data), "--out", str(workdir / "pipeline-run" / "report.md" / "x")],
                       capture_output=True, text=True, env=env)
    record(g, "--out under a file", r.returncode == 1 and "Traceback" not in r.stderr + r.stdout,
           (r.stderr or r.stdout).strip().splitlines()[-1][:100] if (r.stderr or r.stdout).strip() else "")


def drill_dvc(workdir: Path) -> None:
    g = "dvc"
    import boto3

    from tailsynth.data.versioning import push, setup_s3_remote
    from tailsynth.serve.ports import free_port

    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    srv = subprocess.Popen([str(moto) if moto.exists() else sys.executable, *([] if moto.exists() else ["-m", "moto.server"]),
                            "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "drill", "AWS_SECRET_ACCESS_KEY": "drill", "DVC_NO_ANALYTICS": "1"}
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DVC_NO_ANALYTICS")})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        s3.create_bucket(Bucket="drill")
        repo = workdir / "dvc-repo"
        (repo / "data").mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(300):
            (repo / "data" / f"f{i:03d}.bin").write_bytes(rng.bytes(64 * 1024))
        dvc = [sys.executable, "-m", "dvc"]
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True, env=env)
        subprocess.run([*dvc, "add", "-q", "data"], cwd=repo, check=True, env=env)
        setup_s3_remote("drill", url, repo=repo, default=True)
        p = subprocess.Popen([*dvc, "push", "-j", "1"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and p.poll() is None:
            n = s3.list_objects_v2(Bucket="drill").get("KeyCount", 0)
            if n >= 20:
                break
            time.sleep(0.05)
        partial = s3.list_objects_v2(Bucket="drill").get("KeyCount", 0)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        push(repo)

        def remote_hashes():
            out, token = {}, None
            while True:
                kw = {"Bucket": "drill", **({"ContinuationToken": token} if token else {})}
                page = s3.list_objects_v2(**kw)
                for o in page.get("Contents", []):
                    body = s3.get_object(Bucket="drill", Key=o["Key"])["Body"].read()
                    out[o["Key"].rsplit("/", 2)[-2] + o["Key"].rsplit("/", 1)[-1]] = hashlib.md5(body).hexdigest()
                if not page.get("IsTruncated"):
                    return out
                token = page["NextContinuationToken"]

        remote = remote_hashes()
        # DVC stores each object under its own md5: name and content must agree, for every cached file.
        names_match = all(k.replace(".dir", "") == v or k.endswith(".dir") for k, v in remote.items())
        local = {p.parent.name + p.name for p in (repo / ".dvc" / "cache" / "files" / "md5").rglob("*") if p.is_file()}
        record(g, "interrupted dvc push, re-run", names_match and set(remote) == local,
               f"{partial} objects before the kill; {len(remote)} after the re-run; {len(local)} in the local cache")
    finally:
        srv.terminate()
        srv.wait(10)


def drill_ensemble_faults(repo: Path, workdir: Path) -> None:
    """Killed stub and killed tritonserver in the ensemble mode: judged by answers, since clients reach Triton
    itself and its readiness is Triton's own (a dead stub does not turn it off)."""
    g = "ensemble"

    def answers(cl, want, n=6) -> bool:  # several in a row: each may reach another preprocess instance
        for _ in range(n):
            c, o = cl.send([good])
            if c != 200 or cl.top(o) != want:
                return False
        return True

    def within(cond, seconds) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            if cond():
                return time.monotonic() - t0
            time.sleep(0.3)
        return None

    good = jpeg(0)
    ep = Endpoint(repo, "triton", workdir, mode="ensemble")
    try:
        cl = Client(ep, "ensemble")
        want = cl.top(cl.send([good])[1])
        tpid = next(p for p, n, s in children(ep.proc.pid) if n.startswith("tritonserver"))
        stub = next(p for p, n, s in children(tpid) if n.startswith("triton_python")
                    and b"/preprocess/" in Path(f"/proc/{p}/cmdline").read_bytes())
        os.kill(stub, signal.SIGKILL)
        t = within(lambda: "answers again" in ep.log() and answers(cl, want), 60)
        record(g, "killed preprocess stub: reloaded, answers again", t is not None,
               f"after {t:.1f}s" if t is not None else "still failing")
        os.kill(tpid, signal.SIGKILL)
        t = within(lambda: "restart 1/" in ep.log() and answers(cl, want), 180)
        zombies = [c for c in children(ep.proc.pid) if c[2] == "Z"]
        record(g, "killed tritonserver: restarted, no zombie", t is not None and not zombies,
               f"answers again after {t:.1f}s; zombies {zombies}" if t is not None else "not answering")
    finally:
        rc = ep.stop()
        record(g, "SIGTERM stops cleanly", rc == 0, f"exit code {rc}")


def markdown() -> str:
    lines = ["| group | case | result | detail |", "|---|---|---|---|"]
    for g, c, ok, d in RESULTS:
        lines.append(f"| {g} | {c} | {'pass' if ok else '**FAIL**'} | {d} |")
    return "\n".join(lines) + "\n"


def _cli(*args, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    exe = ROOT / ".venv" / "bin" / "tailsynth"
    return subprocess.run([str(exe) if exe.exists() else "tailsynth", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _refused(group: str, case: str, r: subprocess.CompletedProcess, words: str) -> bool:
    out = r.stdout + r.stderr
    return record(group, case, r.returncode != 0 and words in out and "Traceback" not in out,
                  f"exit {r.returncode}: {out.strip().splitlines()[-1][:110] if out.strip() else ''}")


def drill_integrity(workdir: Path, data: Path) -> None:
    """Model bytes from checkpoint to server, one writer per folder, parameters before work (issue 31): each
    fault is tried through the real CLI and must be refused with the file, PID or parameter named."""
    import shutil

    from tailsynth.serve.ports import free_port

    g = "integrity"
    src = workdir / "model"
    raw = (src / "model.pt").read_bytes()
    for name, blob, words in (
            ("damaged model.pt (4 KB noise, same size)",
             raw[:len(raw) // 2] + np.random.default_rng(0).bytes(4096) + raw[len(raw) // 2 + 4096:], "model.pt"),
            ("empty model.pt", b"", "empty file"),
            ("truncated model.pt", raw[:len(raw) // 3], "not a readable classifier checkpoint")):
        bad = workdir / f"bad-{len(blob)}"
        bad.mkdir()
        (bad / "model.pt").write_bytes(blob)
        _refused(g, f"export: {name}", _cli("export", "--model", bad, "--out", workdir / f"repo-{len(blob)}"), words)
    repo = workdir / "repo-integrity"
    shutil.copytree(workdir / "repo", repo, ignore=shutil.ignore_patterns("predictions.jsonl*", "__pycache__"))
    onnx = repo / MODEL / "1" / "model.onnx"
    good = onnx.read_bytes()
    onnx.write_bytes(good[:len(good) // 2] + np.random.default_rng(1).bytes(1024) + good[len(good) // 2 + 1024:])
    _refused(g, "serve: model.onnx changed after export", _cli("serve", "--repo", repo, "--backend", "onnxruntime",
                                                               "--port", free_port()), "SHA-256 differs")
    onnx.write_bytes(good)
    extra = repo / MODEL / "2"
    extra.mkdir()
    (extra / "model.onnx").write_bytes(good)
    _refused(g, "serve: a version folder added", _cli("serve", "--repo", repo, "--backend", "onnxruntime", "--port",
                                                      free_port()), "not written by the export")
    shutil.rmtree(extra)
    # one writer per output folder: a held lock names its holder
    from tailsynth.outdir import claim

    busy = workdir / "busy"
    with claim(busy, "drill"):
        r = _cli("train", "classifier", "--data", data, "--out", busy, "--epochs", "1")
        _refused(g, "second writer on a busy --out", r, str(os.getpid()))
    _refused(g, "--batch-size 0", _cli("train", "classifier", "--data", data, "--out", workdir / "b0",
                                       "--batch-size", "0"), "batch")
    r = _cli("pipeline", "run", "--local", "--profile", "tiny", "--data", data, "--out", workdir / "p-abc",
             "--set", "epochs=abc")
    _refused(g, "pipeline --set epochs=abc", r, "epochs")
    record(g, "no run left 'running' after a refused start", not (workdir / "p-abc" / "run.yaml").exists()
           or "status: running" not in (workdir / "p-abc" / "run.yaml").read_text())
    # the Triton environment is found from a working folder outside the checkout (where `serve --backend triton`
    # used to fail unless an environment variable was set)
    env = {k: v for k, v in os.environ.items() if k != "TAILSYNTH_TRITON_VENV"}
    r = subprocess.run([sys.executable, "-c", "from tailsynth.serve.triton import locate; print(locate()['binary'])"],
                       capture_output=True, text=True, cwd="/", env=env, timeout=60)
    record(g, "Triton environment found from /", r.returncode == 0 and "tritonserver" in r.stdout,
           (r.stdout + r.stderr).strip().splitlines()[-1][:110] if (r.stdout + r.stderr).strip() else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["onnxruntime", "triton", "both", "ensemble", "all"], default="both",
                    help="both: the transformer on onnxruntime and on Triton; ensemble: the ensemble mode; all: the three")
    ap.add_argument("--soak", type=int, default=200, help="soak requests per backend (0: none)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--skip", default="",
                    help="comma list of groups to skip: endpoint,triton-faults,disk-full,integrity,pipeline,dvc")
    ap.add_argument("--disk-full", type=int, default=2000,
                    help="requests of the disk-full soak (records on a tmpfs filled and emptied; needs root to "
                         "mount it); 0: none")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dermamnist" / "dermamnist.npz")
    ap.add_argument("--out-md", type=Path, default=None)
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average before: {' '.join(load)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fault-drill-") as tmp:
        work = Path(tmp)
        repo = make_repo(work)
        backends = {"both": ["onnxruntime", "triton"], "all": ["onnxruntime", "triton", "ensemble"]}.get(
            a.backend, [a.backend])
        if "endpoint" not in skip:
            for b in backends:
                mode = "ensemble" if b == "ensemble" else "transformer"
                ep = Endpoint(repo, "triton" if b == "ensemble" else b, work, mode=mode)
                try:
                    drill_endpoint(ep, "triton" if b == "ensemble" else b, a.soak, a.concurrency, mode)
                finally:
                    rc = ep.stop()
                    record(b, "SIGTERM stops cleanly", rc == 0, f"exit code {rc}")
        if "triton-faults" not in skip and "triton" in backends:
            drill_triton_faults(repo, work)
        if "triton-faults" not in skip and "ensemble" in backends:
            drill_ensemble_faults(repo, work)
        if "disk-full" not in skip and a.disk_full:
            drill_disk_full(repo, work, a.disk_full, a.concurrency)
        if "integrity" not in skip:
            drill_integrity(work, a.data)
        if "pipeline" not in skip:
            drill_pipeline(work, a.data)
        if "dvc" not in skip:
            drill_dvc(work)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    failed = [r for r in RESULTS if not r[2]]
    print(f"{len(RESULTS) - len(failed)}/{len(RESULTS)} cases passed; load average after: {' '.join(load_after)}")
    if a.out_md:
        a.out_md.parent.mkdir(parents=True, exist_ok=True)
        a.out_md.write_text(f"Load average before {' '.join(load)}, after {' '.join(load_after)}; "
                            f"soak {a.soak} requests at concurrency {a.concurrency}.\n\n" + markdown())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
