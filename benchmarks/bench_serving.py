"""Serving: in-process torch eager (baseline) vs Triton direct vs the Triton endpoint (candidate), in one run.

Every system gets the same closed-loop load on the same images and model: C workers, each sending its share of
a fixed number of one-image requests back to back; throughput = requests / wall time, latency per request.
  torch_eager           request = encoded image bytes -> decode + resize + PyTorch eager in this process (C threads)
  triton_direct         the images decoded and resized ONCE up front; uint8 tensors sent straight to Triton over
                        HTTP v2 with binary data, asking for the outputs the transformer asks for: Triton without
                        the transformer, the reference for the transformer's overhead
  triton_endpoint       `tailsynth serve --backend triton`: image bytes -> KServe transformer (decode, resize,
                        records) -> the same Triton
  triton_ensemble       `tailsynth serve --mode ensemble`: image bytes as binary BYTES straight to Triton's
                        lesion-classifier-e2e (decode, classify, records all inside Triton; no transformer),
                        on the variant's repository, asking for probabilities and class in binary
  onnxruntime           (optional) in-process onnxruntime on the exported model.onnx, C threads
  onnxruntime_endpoint  (optional) `tailsynth serve --backend onnxruntime`
triton_direct talks to the very Triton that the variant's endpoint runs in front of, so both see one config;
triton_ensemble runs its own Triton on the same repository (the same lesion-classifier config). Its goals at
c=32: >= 0.8x triton_direct and >= 1.5x triton_endpoint; its answers are checked against torch on every image.
Systems are interleaved (their order rotates every round) and rows repeated; each row keeps its median round.

Variants compare settings side by side (one `tailsynth serve` each): --variant NAME:KEY=VALUE,KEY=VALUE
  Triton model config: max_batch_size, preferred_batch_sizes (8/16/32 or none), max_queue_delay_us, instances,
                       ort_threads, ort_spinning, preprocess_instances (the ensemble's decoders)
  transformer:         decode_threads, jpeg_draft, request_logs, event_loop, http_parser, coalesce, workers
                       (tailsynth/serve/tuning.py says why each default is what it is)
  client:              protocol (v1 JSON+base64, as `tailsynth predict` sends; or v2 binary BYTES)

    .venv/bin/python benchmarks/bench_serving.py --concurrency 1,8,32 --rounds 3 \\
        --out docs/results/performance/serving.json --out-md docs/results/performance/serving.md \\
        --plot docs/results/performance/serving_p99.png

Without --model it builds an untrained timm resnet18 at the main job's resolution (the cpu profile); speed does
not depend on the weights, and the output says so. Images: real ISIC JPEGs from ../shared/data (skipped with a
message when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# torch's OpenMP workers busy-wait after each op; in one process with the HTTP client (and beside Triton on a
# 2-core host) that spinning steals the cores from whichever system runs next. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MODEL_NAME = "lesion-classifier"
IN_PROCESS = ("torch_eager", "onnxruntime")
PER_VARIANT = ("triton_direct", "triton_endpoint", "onnxruntime_endpoint", "triton_ensemble")
SYSTEMS = IN_PROCESS + PER_VARIANT
DEFAULT_SYSTEMS = ("torch_eager", "triton_direct", "triton_endpoint", "triton_ensemble")
TRITON_KEYS = ("max_batch_size", "preferred_batch_sizes", "max_queue_delay_us", "instances", "ort_threads",
               "ort_spinning", "preprocess_instances")
ENSEMBLE_NAME = "lesion-classifier-e2e"
CLIENT_KEYS = ("protocol",)
PROTOCOLS = ("v1", "v2")
# The goals, checked at this concurrency: throughput >= 3x torch eager, transformer overhead <= 20%.
GOAL_CONCURRENCY, GOAL_VS_TORCH, GOAL_OVERHEAD = 32, 3.0, 0.20
# Issue 25's goals for the ensemble at the same concurrency: against Triton direct and against the transformer.
GOAL_ENSEMBLE_VS_DIRECT, GOAL_ENSEMBLE_VS_ENDPOINT = 0.8, 1.5
TOKEN = "bench-serving"


# ---------------------------------------------------------------- figures (pure functions, unit-tested)

def percentile(values, q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks (numpy's default)."""
    if len(values) == 0:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(lat_s, wall_s: float) -> dict:
    """Latencies (seconds) of one closed-loop row and its wall time -> throughput and percentiles in ms."""
    if wall_s <= 0:
        raise ValueError(f"wall time {wall_s} s: must be > 0")
    ms = np.asarray(lat_s, dtype=np.float64) * 1000.0
    return {"requests": int(ms.size), "wall_s": float(wall_s), "throughput_rps": ms.size / wall_s,
            "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
            "mean_ms": float(ms.mean())}


def median_round(rows: list[dict]) -> dict:
    """The round with the median throughput (the upper one of the two middle rounds for an even count), with
    every round's throughput beside it."""
    if not rows:
        raise ValueError("no rounds")
    ordered = sorted(rows, key=lambda r: r["throughput_rps"])
    out = dict(ordered[len(ordered) // 2])
    out["rounds_throughput_rps"] = [round(r["throughput_rps"], 2) for r in rows]
    return out


def overhead(endpoint: dict, direct: dict) -> dict:
    """The transformer's cost against a client that sends the tensors to Triton itself: the throughput lost
    (1 - endpoint / direct; 0.2 = 20% fewer requests per second) and the latency added at p50 and p99."""
    return {"throughput_overhead": 1.0 - endpoint["throughput_rps"] / direct["throughput_rps"],
            "p50_added_ms": endpoint["p50_ms"] - direct["p50_ms"],
            "p99_added_ms": endpoint["p99_ms"] - direct["p99_ms"]}


def versus(row: dict, base: dict) -> dict:
    return {"throughput_vs_torch": row["throughput_rps"] / base["throughput_rps"],
            "p50_vs_torch": row["p50_ms"] / base["p50_ms"], "p99_vs_torch": row["p99_ms"] / base["p99_ms"]}


def shares(requests: int, workers: int) -> list[int]:
    """REQUESTS split over WORKERS as evenly as possible (the first ones take the remainder)."""
    return [requests // workers + (1 if i < requests % workers else 0) for i in range(workers)]


def parse_concurrency(values: list[str]) -> list[int]:
    """["1,8,32"] or ["1", "8", "32"] -> [1, 8, 32] (sorted, unique, each >= 1)."""
    out = sorted({int(x) for v in values for x in str(v).split(",") if x.strip()})
    if not out or out[0] < 1:
        raise SystemExit(f"--concurrency {values}: expected positive integers, e.g. 1,8,32")
    return out


@dataclasses.dataclass
class Variant:
    name: str
    triton: dict = dataclasses.field(default_factory=dict)   # tailsynth.export.triton_config keyword arguments
    tuning: dict = dataclasses.field(default_factory=dict)   # tailsynth.serve.tuning.Tuning fields
    protocol: str = "v1"


def parse_variant(text: str) -> Variant:
    """"NAME" or "NAME:key=value,key=value" (keys: TRITON_KEYS, the Tuning fields, protocol)."""
    from tailsynth.export import parse_batch_sizes
    from tailsynth.serve import tuning

    name, _, rest = text.partition(":")
    name = name.strip()
    if not name or any(c in name for c in "[]=,/ "):
        raise SystemExit(f"--variant {text!r}: start with a plain name, e.g. inst2:instances=2,ort_threads=1")
    v = Variant(name)
    tuning_keys = [f.name for f in dataclasses.fields(tuning.Tuning)]
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: {pair!r} is not KEY=VALUE")
        if key == "preferred_batch_sizes":
            v.triton[key] = parse_batch_sizes(value.replace("/", ","))
        elif key == "ort_spinning":
            v.triton[key] = tuning._bool(value)
        elif key in TRITON_KEYS:
            v.triton[key] = int(value)
        elif key in tuning_keys:
            v.tuning[key] = tuning.convert(key, value)
        elif key == "protocol":
            if value not in PROTOCOLS:
                raise SystemExit(f"--variant {text!r}: protocol {value!r}, expected one of {PROTOCOLS}")
            v.protocol = value
        else:
            raise SystemExit(f"--variant {text!r}: unknown key {key!r}; expected one of "
                             f"{list(TRITON_KEYS) + tuning_keys + list(CLIENT_KEYS)}")
    return v


def label(system: str, variant: Variant | None, n_variants: int) -> str:
    return system if variant is None or n_variants == 1 else f"{system}[{variant.name}]"


def analyse(results: dict, labels: dict) -> dict:
    """Ratios vs torch_eager per row, the transformer overhead per variant and concurrency, and the goals."""
    base = results.get("torch_eager", {})
    for lab, rows in results.items():
        for c, row in rows.items():
            if c in base:
                row.update(versus(row, base[c]))
    over: dict[str, dict] = {}
    for lab, meta in labels.items():
        if meta["system"] != "triton_endpoint":
            continue
        direct = next((d for d, m in labels.items()
                       if m["system"] == "triton_direct" and m["variant"] == meta["variant"]), None)
        if direct is None:
            continue
        over[meta["variant"]] = {c: overhead(results[lab][c], results[direct][c])
                                 for c in results[lab] if c in results[direct]}
    goals = {}
    c = str(GOAL_CONCURRENCY)
    for lab, meta in labels.items():
        if meta["system"] == "triton_endpoint" and c in results[lab] and "throughput_vs_torch" in results[lab][c]:
            vs = results[lab][c]["throughput_vs_torch"]
            ov = over.get(meta["variant"], {}).get(c, {}).get("throughput_overhead")
            goals[meta["variant"]] = {"throughput_vs_torch": vs, "vs_torch_goal_met": vs >= GOAL_VS_TORCH,
                                      "throughput_overhead": ov,
                                      "overhead_goal_met": None if ov is None else ov <= GOAL_OVERHEAD}
    ens_goals = {}
    for lab, meta in labels.items():
        if meta["system"] != "triton_ensemble" or c not in results[lab]:
            continue
        row = results[lab][c]

        def ratio(system):
            other = next((d for d, m in labels.items() if m["system"] == system and m["variant"] == meta["variant"]
                          and c in results[d]), None)
            return None if other is None else row["throughput_rps"] / results[other][c]["throughput_rps"]

        vs_d, vs_e = ratio("triton_direct"), ratio("triton_endpoint")
        ens_goals[meta["variant"]] = {
            "vs_direct": vs_d, "vs_direct_goal_met": None if vs_d is None else vs_d >= GOAL_ENSEMBLE_VS_DIRECT,
            "vs_endpoint": vs_e, "vs_endpoint_goal_met": None if vs_e is None else vs_e >= GOAL_ENSEMBLE_VS_ENDPOINT,
            "p99_ms": row["p99_ms"]}
    return {"overhead": over, "goals": goals, "ensemble_goals": ens_goals}


# ---------------------------------------------------------------- load generators

def closed_loop_threads(fn, payloads: list, requests: int, concurrency: int) -> dict:
    """C threads calling fn(payload) back to back (the in-process systems)."""
    lat: list[float] = []
    lock = threading.Lock()
    share = shares(requests, concurrency)
    start = threading.Barrier(concurrency + 1)

    def worker(w: int):
        try:
            fn(payloads[w % len(payloads)])  # warm this thread (lazy per-thread state) before the clock starts
        except BaseException:
            start.abort()  # the others (and the clock) stop waiting: BrokenBarrierError, then this error
            raise
        start.wait()
        mine = []
        for k in range(share[w]):
            p = payloads[(w * 7919 + k) % len(payloads)]
            t = time.perf_counter()
            fn(p)
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    with ThreadPoolExecutor(concurrency) as ex:
        futs = [ex.submit(worker, w) for w in range(concurrency)]
        try:
            start.wait()
        except threading.BrokenBarrierError:
            for f in futs:
                f.result()  # raises the worker's own error
            raise
        t0 = time.perf_counter()
        for f in futs:
            f.result()
        wall = time.perf_counter() - t0
    return summarize(lat, wall)


@dataclasses.dataclass
class HttpTarget:
    url: str                 # full URL of the inference path
    bodies: list[bytes]      # one pre-built request body per image
    headers: list[dict]      # the matching headers


async def _closed_loop_http(target: HttpTarget, requests: int, concurrency: int) -> dict:
    import aiohttp

    share = shares(requests, concurrency)
    lat: list[float] = []
    n = len(target.bodies)

    async def post(s, i: int):
        async with s.post(target.url, data=target.bodies[i], headers=target.headers[i]) as r:
            payload = await r.read()
            if r.status != 200:
                raise RuntimeError(f"{target.url}: HTTP {r.status} {payload[:300]!r}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, force_close=False)) as s:
        # One untimed request per worker first: the connections exist before the clock starts.
        await asyncio.gather(*(post(s, w % n) for w in range(concurrency)))

        async def worker(w: int):
            for k in range(share[w]):
                t = time.perf_counter()
                await post(s, (w * 7919 + k) % n)
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return summarize(lat, time.perf_counter() - t0)


def closed_loop_http(target: HttpTarget, requests: int, concurrency: int) -> dict:
    return asyncio.run(_closed_loop_http(target, requests, concurrency))


# ---------------------------------------------------------------- request bodies

def v1_target(url: str, images: list[bytes]) -> HttpTarget:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    bodies = [json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}}]}).encode()
              for b in images]
    return HttpTarget(f"{url}/v1/models/{MODEL_NAME}:predict", bodies, [headers] * len(bodies))


def _binary_body(inputs, outputs) -> tuple[bytes, dict]:
    import tritonclient.http as th

    body, json_size = th.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return body, headers


def v2_bytes_target(url: str, images: list[bytes]) -> HttpTarget:
    """The transformer's v2 endpoint with the encoded images as binary BYTES."""
    import tritonclient.http as th

    bodies, headers = [], []
    for b in images:
        inp = th.InferInput("image_bytes", [1], "BYTES")
        inp.set_data_from_numpy(np.array([b], dtype=np.object_), binary_data=True)
        body, h = _binary_body([inp], None)
        bodies.append(body)
        headers.append({**h, "Authorization": f"Bearer {TOKEN}"})
    return HttpTarget(f"{url}/v2/models/{MODEL_NAME}/infer", bodies, headers)


def ensemble_target(url: str, images: list[bytes]) -> HttpTarget:
    """Triton's lesion-classifier-e2e with the encoded images as binary BYTES `image`, as a Triton client sends
    them; the outputs a client needs (probabilities, class) in binary."""
    import tritonclient.http as th

    bodies, headers = [], []
    for b in images:
        inp = th.InferInput("image", [1, 1], "BYTES")  # a batch of one image file
        inp.set_data_from_numpy(np.array([[b]], dtype=np.object_), binary_data=True)
        outs = [th.InferRequestedOutput("probabilities", binary_data=True),
                th.InferRequestedOutput("class", binary_data=True)]
        body, h = _binary_body([inp], outs)
        bodies.append(body)
        headers.append({**h, "Authorization": f"Bearer {TOKEN}"})
    return HttpTarget(f"{url}/v2/models/{ENSEMBLE_NAME}/infer", bodies, headers)


def direct_target(triton_url: str, tensors: np.ndarray) -> HttpTarget:
    """Triton's own v2 endpoint with each image's uint8 tensor as binary data, asking for the two outputs the
    transformer asks for (tailsynth.serve.backends.TritonHTTPBackend), in binary."""
    import tritonclient.http as th

    bodies, headers = [], []
    for x in tensors:
        inp = th.InferInput("image", [1, *x.shape], "UINT8")
        inp.set_data_from_numpy(np.ascontiguousarray(x[None]), binary_data=True)
        outs = [th.InferRequestedOutput("probabilities", binary_data=True),
                th.InferRequestedOutput("features", binary_data=True)]
        body, h = _binary_body([inp], outs)
        bodies.append(body)
        headers.append(h)
    return HttpTarget(f"{triton_url}/v2/models/{MODEL_NAME}/infer", bodies, headers)


# ---------------------------------------------------------------- answers (each system computes the same thing)

def _post_sync(url: str, body: bytes, headers: dict):
    """(body, headers) of one POST; the headers object looks names up case-insensitively."""
    import urllib.request

    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read(), r.headers


def http_probabilities(target: HttpTarget, kind: str, n: int, classes: list[str]) -> np.ndarray:
    """The probabilities the first N requests of TARGET answer with (checked once, outside the timed rows)."""
    out = []
    for i in range(n):
        raw, headers = _post_sync(target.url, target.bodies[i], target.headers[i])
        if kind == "v1":
            p = json.loads(raw)["predictions"][0]["probabilities"]
            out.append([p[c] for c in classes])
        elif kind == "v2":
            body = json.loads(raw)
            o = next(x for x in body["outputs"] if x["name"] == "probabilities")
            out.append(o["data"][: len(classes)])
        else:  # Triton binary
            import tritonclient.http as th

            hl = headers.get("Inference-Header-Content-Length")
            res = th.InferenceServerClient.parse_response_body(raw, header_length=int(hl) if hl else None)
            out.append(res.as_numpy("probabilities")[0])
    return np.asarray(out, dtype=np.float64)


# ---------------------------------------------------------------- model, images, servers

def default_resolution() -> int:
    """The resolution the main job (pipelines/profiles.py, cpu profile) trains and serves at."""
    sys.path.insert(0, str(ROOT))
    from pipelines.profiles import PROFILES

    return int(PROFILES["cpu"]["resolution"])


def build_untrained(out: Path, resolution: int) -> Path:
    import torch

    from tailsynth.classify.model import build_backbone, save_classifier

    torch.manual_seed(0)
    save_classifier(build_backbone("resnet18", 7), out, backbone="resnet18",
                    classes=["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"], resolution=resolution,
                    config={"note": "untrained, for serving speed only"})
    return out


def resolve_model(model: Path | None, work: Path, resolution: int | None) -> dict:
    """--model (a classifier folder, an exported repository, or a model.onnx inside one) -> the classifier folder
    torch eager runs, the local repository Triton serves, and what to say about them."""
    from tailsynth.export import export_model

    if model is None:
        r = resolution or default_resolution()
        mdir = build_untrained(work / "model", r)
        return {"model_dir": mdir, "repo": Path(export_model(mdir, work / "repo", "local")["repository"]),
                "untrained": True, "source": f"untrained timm resnet18 at {r} px (the cpu profile's resolution)"}
    model = model.resolve()
    if (model / "model.pt").is_file():
        return {"model_dir": model, "repo": Path(export_model(model, work / "repo", "local")["repository"]),
                "untrained": False, "source": str(model)}
    repo = model.parents[2] if model.suffix == ".onnx" else model
    info_path = repo / MODEL_NAME / "serving.json"
    if not info_path.is_file():
        raise SystemExit(f"--model {model}: neither a classifier folder (model.pt) nor an exported repository "
                         f"({info_path} missing)")
    info = json.loads(info_path.read_text())
    if info.get("target") != "local":
        raise SystemExit(f"--model {model}: exported for target {info.get('target')!r}; the local Triton needs "
                         "`tailsynth export --target local` (or pass the classifier folder)")
    card = json.loads((repo / MODEL_NAME / "model_card.json").read_text())
    mdir = Path(((card.get("lineage") or {}).get("classifier") or {}).get("model_dir") or "")
    if not (mdir / "model.pt").is_file():
        raise SystemExit(f"--model {model}: the repository's model card names the classifier folder {mdir!s}, "
                         "which is not here; torch eager needs it: pass that folder as --model")
    return {"model_dir": mdir, "repo": repo, "untrained": False, "source": str(model)}


def load_images(folder: Path, n: int) -> list[Path]:
    files = sorted(folder.rglob("*.jpg")) if folder.is_dir() else []
    return files[:: max(1, len(files) // n)][:n]


class Endpoint:
    """`tailsynth serve` (transformer + its own Triton) for one variant, on free loopback ports."""

    def __init__(self, repo: Path, backend: str, tuning_flags: list[str], workdir: Path, name: str,
                 mode: str = "transformer"):
        from tailsynth.serve.ports import free_port

        self.port, self.triton_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.triton_url = f"http://127.0.0.1:{self.triton_port}"
        self.mode = mode
        self.log_path = workdir / f"serve-{name}-{backend}-{mode}.log"
        exe = Path(sys.executable).parent / "tailsynth"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from tailsynth.cli import app; app()"]
        cmd += ["serve", "--repo", str(repo), "--backend", backend, "--port", str(self.port),
                "--records", str(workdir / f"records-{name}-{backend}-{mode}.jsonl")]
        if mode == "ensemble":  # Triton itself on --port; the transformer's settings do not apply
            cmd += ["--mode", "ensemble"]
            self.triton_url = self.url
        else:
            cmd += tuning_flags
            if backend == "triton":
                cmd += ["--triton-port", str(self.triton_port)]
        env = {**os.environ, "TAILSYNTH_TOKEN": TOKEN}
        env.pop("TAILSYNTH_ADMIN_TOKEN", None)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (open for the server's lifetime; closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 300.0) -> Endpoint:
        from tailsynth.serve.ports import wait_http_ready

        try:
            wait_http_ready(f"{self.url}/v2/health/ready", self.proc, timeout)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{self.log_path}: endpoint did not start ({e})\n{self.log()[-3000:]}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        from tailsynth.serve.ports import stop_process

        code = stop_process(self.proc, 60)  # SIGTERM: `tailsynth serve` stops and takes its Triton down with it
        self._log.close()
        return code


def _tuning_flags(tuning: dict) -> list[str]:
    """Tuning fields -> `tailsynth serve` options (the CLI's spelling)."""
    flags = []
    for k, v in tuning.items():
        if k == "jpeg_draft":
            flags.append("--jpeg-draft" if v else "--exact-decode")
        elif k == "request_logs":
            flags += ["--request-logs"] if v else []
        else:
            flags += [f"--{k.replace('_', '-')}", str(v)]
    return flags


def _cmd_version(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def versions(triton_url: str | None) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime
    import PIL
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "pillow": PIL.__version__, "numpy": np.__version__}
    for mod in ("kserve", "uvloop", "tritonclient", "aiohttp"):
        try:
            out[mod] = version(mod)
        except PackageNotFoundError:
            out[mod] = None
    from tailsynth.serve.triton import triton_env_path

    py = triton_env_path() / "bin" / "python"
    out["onnxruntime_in_triton"] = _cmd_version([str(py), "-c", "import onnxruntime; print(onnxruntime.__version__)"])
    if triton_url:
        try:
            import urllib.request

            with urllib.request.urlopen(f"{triton_url}/v2", timeout=10) as r:
                out["tritonserver"] = json.loads(r.read()).get("version")
        except OSError:
            out["tritonserver"] = None
    return out


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_isa() -> str:
    """The widest vector ISA of this CPU (PLATFORM_NOTES: AVX-512 and AVX2-only machines differ several-fold)."""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return platform.machine()
    have = set(flags.split(":", 1)[-1].split())
    for isa in ("avx512_bf16", "avx512f", "avx2"):
        if isa in have:
            return isa
    return platform.machine()


# ---------------------------------------------------------------- the run

def run(a: argparse.Namespace) -> dict:
    import onnxruntime as ort
    import torch

    from tailsynth.classify.model import load_classifier, predict_arrays
    from tailsynth.export import reconfigure_repository
    from tailsynth.serve.images import decode_image
    from tailsynth.serve.tuning import Tuning

    t_start = time.perf_counter()
    load_before = loadavg()
    concurrency = parse_concurrency(a.concurrency)
    variants = [parse_variant(v) for v in (a.variant or ["default"])]
    if len({v.name for v in variants}) != len(variants):
        raise SystemExit("--variant names must be unique")
    systems = list(dict.fromkeys(a.systems))
    work = Path(tempfile.mkdtemp(prefix="tailsynth-bench-serving-"))
    endpoints: list[Endpoint] = []
    try:
        files = load_images(a.images, a.n_images)
        m = resolve_model(a.model, work, a.resolution)
        net, meta = load_classifier(m["model_dir"])
        net.eval()
        r = int(meta.resolution)
        images = [f.read_bytes() for f in files]
        # torch eager decodes as the transformer does by default (tailsynth.serve.images.decode_image).
        tensors = np.stack([decode_image(b, r) for b in images])
        classes = list(meta.classes)
        with torch.no_grad():
            p_torch = predict_arrays(net, meta, tensors)
            p_exact = predict_arrays(net, meta, np.stack([decode_image(b, r, jpeg_draft=False) for b in images]))
            p_draft = predict_arrays(net, meta, np.stack([decode_image(b, r, jpeg_draft=True) for b in images]))
        draft_effect = {"max_abs_diff_probabilities": float(np.abs(p_draft - p_exact).max()),
                        "top1_agreement": float((p_draft.argmax(1) == p_exact.argmax(1)).mean())}

        calls: dict[str, callable] = {}
        labels: dict[str, dict] = {}
        answers: dict[str, float] = {}
        top1: dict[str, float] = {}  # top-1 agreement with torch eager on every image (the ensemble)
        n_check = min(8, len(images))
        if "torch_eager" in systems:
            def torch_eager(b: bytes):
                return predict_arrays(net, meta, decode_image(b, r)[None])

            calls["torch_eager"] = lambda c, n: closed_loop_threads(torch_eager, images, n, c)
            labels["torch_eager"] = {"system": "torch_eager", "variant": None}
        if "onnxruntime" in systems:
            opts = ort.SessionOptions()
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the served paths
            onnx = next((m["repo"] / MODEL_NAME).glob("[0-9]*/model.onnx"))
            sess = ort.InferenceSession(str(onnx), sess_options=opts, providers=["CPUExecutionProvider"])

            def onnxruntime_inproc(b: bytes):
                return sess.run(["probabilities"], {"image": decode_image(b, r)[None]})[0]

            answers["onnxruntime"] = float(np.abs(np.concatenate([onnxruntime_inproc(b) for b in images[:n_check]])
                                                  - p_torch[:n_check]).max())
            calls["onnxruntime"] = lambda c, n: closed_loop_threads(onnxruntime_inproc, images, n, c)
            labels["onnxruntime"] = {"system": "onnxruntime", "variant": None}

        variant_info = {}
        for v in variants:
            repo = reconfigure_repository(m["repo"], work / f"repo-{v.name}", **v.triton)
            variant_info[v.name] = {"triton": {k: list(x) if isinstance(x, tuple) else x for k, x in v.triton.items()},
                                    "tuning": Tuning(**v.tuning).as_dict(), "protocol": v.protocol,
                                    "config_pbtxt": (repo / MODEL_NAME / "config.pbtxt").read_text()}
            flags = _tuning_flags(v.tuning)
            for system in ("triton_endpoint", "onnxruntime_endpoint"):
                want_direct = system == "triton_endpoint" and "triton_direct" in systems
                if system not in systems and not want_direct:
                    continue
                backend = "triton" if system == "triton_endpoint" else "onnxruntime"
                print(f"starting {system} [{v.name}] ...", file=sys.stderr, flush=True)
                ep = Endpoint(repo, backend, flags, work, v.name)
                endpoints.append(ep)
                ep.wait_ready(a.start_timeout)
                if want_direct:
                    lab = label("triton_direct", v, len(variants))
                    tgt = direct_target(ep.triton_url, tensors)
                    answers[lab] = float(np.abs(http_probabilities(tgt, "triton", n_check, classes)
                                                - p_torch[:n_check]).max())
                    calls[lab] = lambda c, n, t=tgt: closed_loop_http(t, n, c)
                    labels[lab] = {"system": "triton_direct", "variant": v.name}
                if system in systems:
                    lab = label(system, v, len(variants))
                    tgt = v1_target(ep.url, images) if v.protocol == "v1" else v2_bytes_target(ep.url, images)
                    answers[lab] = float(np.abs(http_probabilities(tgt, v.protocol, n_check, classes)
                                                - p_torch[:n_check]).max())
                    calls[lab] = lambda c, n, t=tgt: closed_loop_http(t, n, c)
                    labels[lab] = {"system": system, "variant": v.name}
            if "triton_ensemble" in systems:
                print(f"starting triton_ensemble [{v.name}] ...", file=sys.stderr, flush=True)
                ep = Endpoint(repo, "triton", flags, work, v.name, mode="ensemble")
                endpoints.append(ep)
                ep.wait_ready(a.start_timeout)
                lab = label("triton_ensemble", v, len(variants))
                tgt = ensemble_target(ep.url, images)
                # Every image, not only the first few: the decode now runs in another process and environment.
                p_ens = http_probabilities(tgt, "triton", len(images), classes)
                answers[lab] = float(np.abs(p_ens - p_torch).max())
                top1[lab] = float((p_ens.argmax(1) == p_torch.argmax(1)).mean())
                calls[lab] = lambda c, n, t=tgt: closed_loop_http(t, n, c)
                labels[lab] = {"system": "triton_ensemble", "variant": v.name}
        if not calls:
            raise SystemExit(f"nothing to measure: --systems {systems}")
        for lab, fn in calls.items():  # warm every system (first-call costs, connection set-up) before any row
            fn(1, a.warmup)

        order = list(calls)
        per_round: dict[str, dict[str, list]] = {lab: {str(c): [] for c in concurrency} for lab in order}
        for rnd in range(a.rounds):
            for c in concurrency:
                n = max(a.requests, a.min_per_worker * c)
                shift = rnd % len(order)  # rotate who goes first: slow drifts in the background load even out
                for lab in order[shift:] + order[:shift]:
                    row = calls[lab](c, n)
                    per_round[lab][str(c)].append(row)
                    print(f"round {rnd} {lab:32s} c={c:<3d} {row['throughput_rps']:8.1f} req/s  "
                          f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms", file=sys.stderr, flush=True)
        results = {lab: {c: median_round(rows) for c, rows in by_c.items()} for lab, by_c in per_round.items()}
        derived = analyse(results, labels)
        triton_url = next((ep.triton_url for ep in endpoints if "triton" in ep.log_path.name), None)
        vers = versions(triton_url)
    finally:
        codes = [ep.stop() for ep in endpoints]
        if a.logs:
            a.logs.mkdir(parents=True, exist_ok=True)
            for ep in endpoints:
                shutil.copy2(ep.log_path, a.logs / ep.log_path.name)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "serving", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "requests_per_row": a.requests, "min_requests_per_worker": a.min_per_worker, "rounds": a.rounds,
        "concurrency": concurrency, "systems": labels, "results": results, **derived,
        "answers_max_abs_diff_vs_torch": answers, "answers_top1_agreement_vs_torch": top1,
        "jpeg_draft_effect_on_torch": draft_effect,
        "variants": variant_info,
        "model": {"backbone": meta.backbone, "resolution": r, "untrained": m["untrained"], "source": m["source"],
                  "classes": classes},
        "images": {"count": len(images), "source": str(a.images),
                   "mean_bytes": float(np.mean([len(b) for b in images]))},
        "machine": {"cpus": os.cpu_count(), "cpu_isa": cpu_isa(), "loadavg_before": load_before,
                    "loadavg_after": loadavg(),
                    "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "versions": vers, "endpoint_exit_codes": codes, "wall_s": time.perf_counter() - t_start,
    }


# ---------------------------------------------------------------- reports

def markdown(rep: dict) -> str:
    m, mach = rep["model"], rep["machine"]
    lines = [f"Command: `{rep['command']}`", "",
             f"Model {m['backbone']} at {m['resolution']} px ({'untrained weights: speed only' if m['untrained'] else m['source']}); "
             f"{rep['images']['count']} real JPEGs from {rep['images']['source']} (mean {rep['images']['mean_bytes'] / 1024:.1f} KB); "
             f"one image per request, closed loop, at least {rep['requests_per_row']} requests per row "
             f"({rep['min_requests_per_worker']} per worker at high concurrency); systems interleaved, each row the "
             f"median-throughput round of {rep['rounds']}. {mach['cpus']} CPUs ({mach.get('cpu_isa')}); load average before "
             f"`{mach['loadavg_before']}`, after `{mach['loadavg_after']}`. Versions: "
             + ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if v) + ".", "",
             "| system | concurrency | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | throughput vs torch | p50 vs torch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    nan = float("nan")
    for lab, rows in rep["results"].items():
        for c, x in rows.items():
            lines.append(f"| {lab} | {c} | {x['throughput_rps']:.1f} | {x['p50_ms']:.1f} | {x['p95_ms']:.1f} | "
                         f"{x['p99_ms']:.1f} | {x.get('throughput_vs_torch', nan):.2f}x | {x.get('p50_vs_torch', nan):.2f}x |")
    if rep["overhead"]:
        lines += ["", "Transformer overhead (triton_endpoint against triton_direct on the same Triton):", "",
                  "| variant | concurrency | overhead (1 - endpoint/direct throughput) | p50 added (ms) | p99 added (ms) |",
                  "|---|---:|---:|---:|---:|"]
        for v, rows in rep["overhead"].items():
            for c, o in rows.items():
                lines.append(f"| {v} | {c} | {100 * o['throughput_overhead']:.1f}% | {o['p50_added_ms']:.1f} | "
                             f"{o['p99_added_ms']:.1f} |")
    if rep["goals"]:
        lines += ["", (f"Goals at concurrency {GOAL_CONCURRENCY}: endpoint throughput >= {GOAL_VS_TORCH:.0f}x torch "
                       f"eager, transformer overhead <= {100 * GOAL_OVERHEAD:.0f}%."), ""]
        for v, g in rep["goals"].items():
            ov = "n/a" if g["throughput_overhead"] is None else f"{100 * g['throughput_overhead']:.1f}%"
            lines.append(f"- {v}: {g['throughput_vs_torch']:.2f}x torch ({'met' if g['vs_torch_goal_met'] else 'NOT met'}), "
                         f"overhead {ov} ({'met' if g['overhead_goal_met'] else 'NOT met'})")
    if rep.get("ensemble_goals"):
        lines += ["", (f"Ensemble goals at concurrency {GOAL_CONCURRENCY}: triton_ensemble >= "
                       f"{GOAL_ENSEMBLE_VS_DIRECT}x triton_direct and >= {GOAL_ENSEMBLE_VS_ENDPOINT}x triton_endpoint."), ""]

        def fmt(x, met):
            return "n/a" if x is None else f"{x:.2f}x ({'met' if met else 'NOT met'})"

        for v, g in rep["ensemble_goals"].items():
            lines.append(f"- {v}: {fmt(g['vs_direct'], g['vs_direct_goal_met'])} Triton direct, "
                         f"{fmt(g['vs_endpoint'], g['vs_endpoint_goal_met'])} the transformer endpoint, "
                         f"p99 {g['p99_ms']:.1f} ms")
    if rep.get("answers_top1_agreement_vs_torch"):
        lines += ["", "Top-1 agreement with torch eager on every image: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in rep["answers_top1_agreement_vs_torch"].items()) + "."]
    lines += ["", "Variants:", ""]
    for name, v in rep["variants"].items():
        lines.append(f"- {name}: Triton {v['triton'] or 'defaults'}; transformer {v['tuning']}; client {v['protocol']}")
    lines += ["", "Throughput of every round (req/s):", "", "| system | " + " | ".join(f"c={c}" for c in rep["concurrency"]) + " |",
              "|---|" + "---|" * len(rep["concurrency"])]
    for lab, rows in rep["results"].items():
        lines.append(f"| {lab} | " + " | ".join(", ".join(str(t) for t in rows[str(c)]["rounds_throughput_rps"])
                                               for c in rep["concurrency"] if str(c) in rows) + " |")
    d = rep["jpeg_draft_effect_on_torch"]
    lines += ["", "Same answers: largest probability difference from torch eager on the first images: "
              + ", ".join(f"{k} {v:.1e}" for k, v in rep["answers_max_abs_diff_vs_torch"].items())
              + f". JPEG draft decoding (the opt-in lever `--jpeg-draft`) vs exact decoding (the default), torch eager on all {rep['images']['count']} "
              f"images: top-1 agreement {d['top1_agreement']:.3f}, largest probability difference "
              f"{d['max_abs_diff_probabilities']:.3f}."]
    return "\n".join(lines) + "\n"


def plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for lab, rows in rep["results"].items():
        cs = sorted(int(c) for c in rows)
        ax1.plot(cs, [rows[str(c)]["p99_ms"] for c in cs], marker="o", label=lab)
        ax2.plot(cs, [rows[str(c)]["throughput_rps"] for c in cs], marker="o", label=lab)
    for ax, title, unit in ((ax1, "p99 latency vs concurrency", "p99 latency (ms)"),
                            (ax2, "throughput vs concurrency", "throughput (requests/s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(rep["concurrency"], [str(c) for c in rep["concurrency"]])
        ax.minorticks_off()
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax1.set_yscale("log")
    ax2.legend(fontsize=8)
    m = rep["model"]
    fig.suptitle(f"{m['backbone']} {m['resolution']} px, {rep['machine']['cpus']} CPUs, load before "
                 f"{rep['machine']['loadavg_before'].split()[0]}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # run the finally blocks: every endpoint (and its Triton) gets stopped


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", type=Path, default=None,
                   help="classifier folder, exported local repository or its model.onnx (default: untrained resnet18)")
    p.add_argument("--resolution", type=int, default=None,
                   help="resolution of the default model (default: the cpu profile's)")
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "isic2019-sample180")
    p.add_argument("--n-images", type=int, default=64, help="images used, spread over the folder")
    p.add_argument("--requests", type=int, default=400, help="requests per row (at least)")
    p.add_argument("--min-per-worker", type=int, default=16,
                   help="at concurrency C a row has at least C x this many requests (steady state, not ramp)")
    p.add_argument("--concurrency", nargs="+", default=["1,8,32"], help="e.g. 1,8,32 or 1,2,4,8,16,32,64")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each row keeps its median-throughput round")
    p.add_argument("--warmup", type=int, default=16, help="untimed requests per system before the first row")
    p.add_argument("--systems", nargs="+", default=list(DEFAULT_SYSTEMS), choices=SYSTEMS)
    p.add_argument("--variant", action="append", default=None, metavar="NAME[:KEY=VALUE,...]",
                   help="settings to compare (repeatable); default: one variant 'default' with the shipped settings")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds for an endpoint to become ready")
    p.add_argument("--out", "--out-json", dest="out", type=Path, default=None, help="JSON results")
    p.add_argument("--out-md", type=Path, default=None, help="markdown table")
    p.add_argument("--plot", type=Path, default=None, help="PNG: p99 and throughput vs concurrency per system")
    p.add_argument("--logs", type=Path, default=None, help="copy the endpoints' server logs into this folder")
    return p


def main(argv=None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    a = parser().parse_args(argv)
    if a.rounds < 1 or a.requests < 1 or a.n_images < 1:
        raise SystemExit("--rounds, --requests and --n-images must be >= 1")
    if not load_images(a.images, 1):
        print(f"SKIPPED: no JPEG images under {a.images} (the real ISIC sample is expected at "
              "../shared/data/isic2019-sample180; pass --images DIR)", file=sys.stderr)
        return 0
    rep = run(a)
    md = markdown(rep)
    print(md)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rep, indent=2) + "\n")
    if a.out_md:
        a.out_md.parent.mkdir(parents=True, exist_ok=True)
        a.out_md.write_text("# Serving benchmark (measured)\n\n" + md)
    if a.plot:
        plot(rep, a.plot)
    first = float(rep["machine"]["loadavg_before"].split()[0])
    if first > 1.5:
        print(f"WARNING: load average {first} before the run (> 1.5): rerun on an idle machine", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
