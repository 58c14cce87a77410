"""Bounded loopback load test: torch eager (baseline) vs onnxruntime in-process vs the local endpoints.

Every system gets the same closed-loop load: C workers, each sending its share of a fixed number of one-image
requests back to back; a request is "encoded image bytes in -> class probabilities out", so decoding and
resizing count everywhere. Latency is per request, throughput = requests / wall time.

  python serving/loadtest.py --requests 256 --concurrency 1 8 32 --out-md docs/results/serving_loadtest.md

Without --model it builds an untrained resnet18 (speed does not depend on the weights; it says so in the table).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# torch's OpenMP workers busy-wait after each op; in one process with onnxruntime (and on a shared 2-core host)
# that spinning steals the cores from whichever system runs next. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_images(folder: Path | None, n: int, resolution: int) -> list[bytes]:
    if folder and folder.exists():
        files = sorted(folder.rglob("*.jpg"))[:n]
        if files:
            return [f.read_bytes() for f in files]
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (180, 180, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def summarize(lat_s: list[float], wall_s: float) -> dict:
    ms = np.array(lat_s) * 1000
    return {"requests": len(lat_s), "throughput_rps": len(lat_s) / wall_s, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}


def closed_loop_threads(fn, images: list[bytes], requests: int, concurrency: int) -> dict:
    lat: list[float] = []
    lock = threading.Lock()
    share = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]

    def worker(w: int):
        mine = []
        for k in range(share[w]):
            img = images[(w * 7919 + k) % len(images)]
            t = time.perf_counter()
            fn(img)
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(worker, range(concurrency)))
    return summarize(lat, time.perf_counter() - t0)


async def _closed_loop_http(url: str, token: str | None, images: list[bytes], requests: int, concurrency: int) -> dict:
    import aiohttp

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    bodies = [json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}}]}).encode()
              for b in images]
    share = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    lat: list[float] = []
    endpoint = f"{url}/v1/models/lesion-classifier:predict"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def worker(w: int):
            for k in range(share[w]):
                body = bodies[(w * 7919 + k) % len(bodies)]
                t = time.perf_counter()
                async with s.post(endpoint, data=body, headers=headers) as r:
                    payload = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{endpoint}: HTTP {r.status} {payload[:200]!r}")
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return summarize(lat, time.perf_counter() - t0)


def closed_loop_http(url, token, images, requests, concurrency) -> dict:
    return asyncio.run(_closed_loop_http(url, token, images, requests, concurrency))


class Endpoint:
    def __init__(self, repo: Path, backend: str, token: str):
        from tailsynth.serve.ports import free_port, wait_http_ready

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"loadtest-{backend}-", suffix=".log", delete=False)
        exe = Path(sys.executable).parent / "tailsynth"
        self.proc = subprocess.Popen([str(exe), "serve", "--repo", str(repo), "--backend", backend, "--port",
                                      str(self.port), "--token", token, "--records",
                                      str(Path(self.log.name).with_suffix(".jsonl"))],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_http_ready(f"{self.url}/v2/health/ready", self.proc, 180)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        for p in (Path(self.log.name), Path(self.log.name).with_suffix(".jsonl")):
            p.unlink(missing_ok=True)


def make_model(out: Path, resolution: int) -> Path:
    import torch

    from tailsynth.classify.model import build_backbone, save_classifier

    torch.manual_seed(0)
    save_classifier(build_backbone("resnet18", 7), out, backbone="resnet18",
                    classes=["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"], resolution=resolution,
                    config={"note": "untrained, for throughput only"})
    return out


def run(model: Path | None, requests: int, concurrency: list[int], images_dir: Path | None, resolution: int,
        systems: list[str], warmup: int = 8, repo: Path | None = None, rounds: int = 1) -> dict:
    import onnxruntime as ort
    import torch

    from tailsynth.classify.model import load_classifier, predict_arrays
    from tailsynth.export import export_model
    from tailsynth.serve.images import decode_image

    work = Path(tempfile.mkdtemp(prefix="tailsynth-loadtest-"))
    untrained = model is None
    model = model or make_model(work / "model", resolution)
    if repo is None:
        repo = work / "repo"
        summary = export_model(model, repo, "local")
    else:  # an existing `tailsynth export --target local` of this model
        from tailsynth.export import check_parity

        info = json.loads((repo / "lesion-classifier" / "serving.json").read_text())
        onnx = repo / "lesion-classifier" / str(info["triton_version"]) / "model.onnx"
        summary = {"onnx": str(onnx), "model_version": info["model_version"]}
    net, meta = load_classifier(model)
    if "parity" not in summary:
        summary["parity"] = check_parity(net, meta, summary["onnx"])
    r = int(meta.resolution)
    images = load_images(images_dir, 64, r)
    opts = ort.SessionOptions()
    # Same session settings as the served paths (no spinning threads; TAILSYNTH_ORT_SPIN=1 to compare).
    opts.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("TAILSYNTH_ORT_SPIN", "0"))
    sess = ort.InferenceSession(summary["onnx"], sess_options=opts, providers=["CPUExecutionProvider"])

    def torch_eager(b: bytes):
        return predict_arrays(net, meta, decode_image(b, r)[None])

    def onnxruntime_inproc(b: bytes):
        return sess.run(["probabilities"], {"image": decode_image(b, r)[None]})[0]

    token = "loadtest"
    calls, endpoints = {}, []
    # Systems are interleaved per concurrency level and repeated: on a shared machine the background load drifts,
    # and running one system's rows back to back would bias the ratios. Each row keeps its median round.
    try:
        for name in systems:
            if name in ("torch_eager", "onnxruntime"):
                fn = torch_eager if name == "torch_eager" else onnxruntime_inproc
                calls[name] = lambda c, n, fn=fn: closed_loop_threads(fn, images, n, c)
            else:
                ep = Endpoint(repo, "triton" if name == "triton_endpoint" else "onnxruntime", token)
                endpoints.append(ep)
                calls[name] = lambda c, n, ep=ep: closed_loop_http(ep.url, token, images, n, c)
            if warmup:
                calls[name](1, warmup)
        rounds_out: dict[str, dict[str, list]] = {n: {str(c): [] for c in concurrency} for n in systems}
        for rnd in range(rounds):
            for c in concurrency:
                for name in systems:
                    row = calls[name](c, requests)
                    rounds_out[name][str(c)].append(row)
                    print(f"round {rnd} {name:22s} c={c:<3d} {row['throughput_rps']:8.1f} req/s  "
                          f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms", file=sys.stderr, flush=True)
    finally:
        for ep in endpoints:
            ep.stop()
    results: dict[str, dict] = {}
    for name, rows in rounds_out.items():
        results[name] = {}
        for c, runs in rows.items():
            runs = sorted(runs, key=lambda r: r["throughput_rps"])
            best = dict(runs[len(runs) // 2])
            best["rounds_throughput_rps"] = [round(r["throughput_rps"], 1) for r in runs]
            results[name][c] = best
    base = results.get("torch_eager", {})
    for name, rows in results.items():
        for c, row in rows.items():
            if c in base:
                row["throughput_vs_torch"] = row["throughput_rps"] / base[c]["throughput_rps"]
                row["p50_vs_torch"] = row["p50_ms"] / base[c]["p50_ms"]
    load = os.getloadavg()
    return {"results": results, "requests": requests, "concurrency": concurrency, "rounds": rounds,
            "model": {"backbone": meta.backbone, "resolution": r, "untrained": untrained,
                      "version": summary["model_version"]},
            "images": f"{len(images)} real JPEGs from {images_dir}" if images_dir and images_dir.exists()
            else f"{len(images)} synthetic JPEGs",
            "machine": {"cpus": os.cpu_count(), "loadavg_at_end": [round(x, 2) for x in load],
                        "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
                        "ort_allow_spinning": os.environ.get("TAILSYNTH_ORT_SPIN", "0"),
                        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
            "parity": summary["parity"]}


def markdown(rep: dict) -> str:
    m = rep["model"]
    lines = ["| system | concurrency | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | throughput vs torch | p50 vs torch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rows in rep["results"].items():
        for c, x in rows.items():
            lines.append(f"| {name} | {c} | {x['throughput_rps']:.1f} | {x['p50_ms']:.1f} | {x['p95_ms']:.1f} | "
                         f"{x['p99_ms']:.1f} | {x.get('throughput_vs_torch', float('nan')):.2f}x | "
                         f"{x.get('p50_vs_torch', float('nan')):.2f}x |")
    head = (f"{rep['requests']} one-image requests per row, closed loop, systems interleaved; each row is the "
            f"median-throughput round of {rep.get('rounds', 1)} (upper median for an even count); model {m['backbone']} at {m['resolution']} px"
            f"{' (untrained weights: speed only)' if m['untrained'] else ''}; {rep['images']}; "
            f"{rep['machine']['cpus']} CPUs, load average at the end {rep['machine']['loadavg_at_end']}.")
    return head + "\n\n" + "\n".join(lines) + "\n"


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # run the finally blocks: endpoints (and their Triton) get stopped


def main(argv=None) -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="classifier folder (default: untrained resnet18)")
    p.add_argument("--repo", type=Path, default=None, help="existing local export of --model (skips the export)")
    p.add_argument("--resolution", type=int, default=64, help="resolution of the default model")
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "isic2019-sample180")
    p.add_argument("--systems", nargs="+", default=["torch_eager", "onnxruntime", "triton_endpoint"],
                   choices=["torch_eager", "onnxruntime", "triton_endpoint", "onnxruntime_endpoint"])
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat every row; the median-throughput round is kept (upper median for an even count)")
    p.add_argument("--out-json", type=Path, default=None)
    p.add_argument("--out-md", type=Path, default=None)
    a = p.parse_args(argv)
    rep = run(a.model, a.requests, a.concurrency, a.images, a.resolution, a.systems, repo=a.repo,
              rounds=a.rounds)
    md = markdown(rep)
    print(md)
    if a.out_json:
        a.out_json.parent.mkdir(parents=True, exist_ok=True)
        a.out_json.write_text(json.dumps(rep, indent=2) + "\n")
    if a.out_md:
        a.out_md.parent.mkdir(parents=True, exist_ok=True)
        a.out_md.write_text("# Serving load test (measured)\n\n" + md)


if __name__ == "__main__":
    main()
