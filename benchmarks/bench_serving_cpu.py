"""Where the endpoint's CPU goes: CPU seconds per process per request under closed-loop load, and the cost of the
transformer's one unavoidable step (decoding the image), to bound what its overhead can be on this machine.

For each variant it starts `tailsynth serve --backend triton` (transformer + its own Triton), sends N one-image v1
requests at concurrency C from this process, and reads the CPU time (user + system, /proc) of every process of the
endpoint (the transformer, tritonserver, the python-backend stub) and of this client before and after. Then it
times the exact decode (tailsynth.serve.images.decode_image, the training reader's pixels) of the same images in
one thread, alone.

The bound: with K cores, throughput <= K / (CPU per request of all processes together). The overhead goal
(endpoint >= (1 - g) x Triton direct) needs CPU per request <= K / ((1 - g) x direct throughput); whatever the
non-transformer processes use is subtracted, and what is left is the transformer's budget per request.

    .venv/bin/python benchmarks/bench_serving_cpu.py --model runs/.../train-classifier/model \\
        --variant default --variant nocoal:coalesce=0 --direct-rps 1886 \\
        --out docs/results/performance/serving_cpu.json --out-md docs/results/performance/serving_cpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_serving as bs  # noqa: E402


def cpu_s(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> dict[int, str]:
    """pid -> command name of ROOT and all its descendants (from /proc)."""
    parent, name = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            st = (d / "stat").read_text()
        except OSError:
            continue
        pid = int(d.name)
        name[pid] = st[st.index("(") + 1:st.rindex(")")]
        parent[pid] = int(st.rsplit(")", 1)[1].split()[1])
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        out[p] = name.get(p, "?")
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def role(name: str) -> str:
    if name.startswith("triton_python"):
        return "python_backend_stub"
    if name.startswith("tritonserver"):
        return "tritonserver"
    return "transformer"


def measure_variant(v: bs.Variant, repo: Path, images: list[bytes], n: int, c: int, work: Path) -> dict:
    from tailsynth.serve.tuning import Tuning

    ep = bs.Endpoint(repo, "triton", bs._tuning_flags(v.tuning), work, v.name).wait_ready()
    try:
        tgt = bs.v1_target(ep.url, images)
        bs.closed_loop_http(tgt, max(200, 8 * c), c)  # warm: connections, Triton's first batches
        procs = process_tree(ep.proc.pid)
        before = {p: cpu_s(p) for p in procs}
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        r = bs.closed_loop_http(tgt, n, c)
        wall = time.perf_counter() - t0
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        per_role: dict[str, float] = {}
        for p, nm in procs.items():
            per_role[role(nm)] = per_role.get(role(nm), 0.0) + cpu_s(p) - before[p]
        per_role["client"] = (me1.ru_utime + me1.ru_stime) - (me0.ru_utime + me0.ru_stime)
        total = sum(per_role.values())
        return {"variant": v.name, "tuning": Tuning(**v.tuning).as_dict(), "requests": n, "concurrency": c,
                "throughput_rps": r["throughput_rps"], "wall_s": wall, "cpu_s": per_role,
                "cpu_ms_per_request": {k: 1000 * x / n for k, x in per_role.items()},
                "cpu_ms_per_request_total": 1000 * total / n, "cores_busy": total / wall}
    finally:
        ep.stop()


def decode_cost(images: list[bytes], resolution: int, seconds: float = 3.0) -> dict:
    from tailsynth.serve.images import decode_image

    out = {}
    for draft in (False, True):
        for b in images:
            decode_image(b, resolution, jpeg_draft=draft)
        n, t0 = 0, time.process_time()
        while time.process_time() - t0 < seconds:
            for b in images:
                decode_image(b, resolution, jpeg_draft=draft)
                n += 1
        out["draft" if draft else "exact"] = 1000 * (time.process_time() - t0) / n
    return out


def bound(row: dict, direct_rps: float, cores: int, goal: float = 0.20) -> dict:
    need_rps = (1 - goal) * direct_rps
    budget_total = 1000 * cores / need_rps
    others = sum(v for k, v in row["cpu_ms_per_request"].items() if k != "transformer")
    return {"direct_rps": direct_rps, "goal_overhead": goal, "needed_rps": need_rps,
            "cpu_ms_per_request_allowed": budget_total, "non_transformer_ms": others,
            "transformer_budget_ms": budget_total - others,
            "transformer_measured_ms": row["cpu_ms_per_request"]["transformer"]}


def markdown(rep: dict) -> str:
    lines = [f"Load average before `{rep['load_before']}`, after `{rep['load_after']}`; {rep['cores']} cores; "
             f"{rep['requests']} one-image v1 requests at concurrency {rep['concurrency']} per variant; model "
             f"{rep['model']}.", "",
             "| variant | req/s | transformer | python stub | tritonserver | client | total CPU ms/request | "
             "cores busy |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rep["variants"]:
        m = r["cpu_ms_per_request"]
        lines.append(f"| {r['variant']} | {r['throughput_rps']:.0f} | {m.get('transformer', 0):.3f} | "
                     f"{m.get('python_backend_stub', 0):.3f} | {m.get('tritonserver', 0):.3f} | {m['client']:.3f} | "
                     f"{r['cpu_ms_per_request_total']:.3f} | {r['cores_busy']:.2f} |")
    d = rep["decode_ms_per_image"]
    lines += ["", f"Exact decode + resize of one of these JPEGs, alone in one thread: **{d['exact']:.3f} ms** "
                  f"(JPEG draft: {d['draft']:.3f} ms)."]
    for name, b in rep.get("bounds", {}).items():
        lines += ["", f"Bound for {name} (Triton direct {b['direct_rps']:.0f} req/s, overhead <= "
                      f"{100 * b['goal_overhead']:.0f}%): the endpoint needs {b['needed_rps']:.0f} req/s, i.e. at most "
                      f"{b['cpu_ms_per_request_allowed']:.3f} CPU ms per request on {rep['cores']} cores. The other "
                      f"processes use {b['non_transformer_ms']:.3f} ms, which leaves the transformer "
                      f"**{b['transformer_budget_ms']:.3f} ms**; it uses {b['transformer_measured_ms']:.3f} ms, and "
                      f"the exact decode alone takes {d['exact']:.3f} ms."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="as bench_serving.py --model")
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "isic2019-sample180")
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--requests", type=int, default=6000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--variant", action="append", default=None, help="as bench_serving.py --variant")
    p.add_argument("--direct-rps", type=float, default=None,
                   help="Triton direct throughput at this concurrency (from bench_serving.py) for the bound")
    p.add_argument("--out", type=Path)
    p.add_argument("--out-md", type=Path)
    a = p.parse_args(argv)
    if not a.images.is_dir():
        print(f"skipped: no images at {a.images}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="tailsynth-bench-serving-cpu-"))
    load_before = bs.loadavg()
    m = bs.resolve_model(a.model, work, None)
    from tailsynth.classify.model import load_classifier

    _, meta = load_classifier(m["model_dir"])
    images = [f.read_bytes() for f in bs.load_images(a.images, a.n_images)]
    variants = [bs.parse_variant(v) for v in (a.variant or ["default"])]
    if any(v.triton for v in variants):
        raise SystemExit("--variant: only transformer settings here (Triton config variants: bench_serving.py)")
    rows = [measure_variant(v, m["repo"], images, a.requests, a.concurrency, work) for v in variants]
    rep = {"model": m["source"], "cores": os.cpu_count(), "requests": a.requests, "concurrency": a.concurrency,
           "variants": rows, "decode_ms_per_image": decode_cost(images, int(meta.resolution)),
           "load_before": load_before}
    if a.direct_rps:
        rep["bounds"] = {r["variant"]: bound(r, a.direct_rps, os.cpu_count()) for r in rows}
    rep["load_after"] = bs.loadavg()
    md = markdown(rep)
    print(md)
    if a.out:
        a.out.write_text(json.dumps(rep, indent=2) + "\n")
    if a.out_md:
        a.out_md.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
