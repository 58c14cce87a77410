"""Synthesis throughput through `tailsynth generate`: the naive baseline vs the shipped synthesizer per UNet runtime.

compare (default): in ONE run, same batch size and threads, same classes, counts and seeds:
  baseline  the old `small` size (untrained weights: speed does not depend on them), 32 px, DDIM 25, guidance 1.5,
            eager torch;
  shipped   --model (models/synth-dermamnist, lean, 28 px) at its chosen sampler (DPM-Solver++ 20, guidance 3),
            once per lever: eager, eager+cl (channels_last), compile (torch.compile), compile+cl, onnxruntime;
            optional eager+bf16 / compile+bf16 (outputs differ: gated by synth-quality + compare_gates.py).
  Each run is the full generate path a user runs (plan, backgrounds, masks, the batched sampling loop, paste-back,
  PNGs). images/s = images / wall time of that loop (runtime preparation, e.g. ONNX export or compilation, and one
  warm-up call are excluded and reported as prepare_s); images/s per process CPU-second is reported too, being less
  sensitive to other load. Rounds interleave the configurations; the median round counts.
  Evidence of numerical equivalence: the max abs difference against eager fp32 of the float images in [-1, 1] of one
  real batch (DermaMNIST backgrounds and their masks, same seeds), and of the uint8 images every lever generated.
  The gate figures of the model card (measured with eager fp32) are copied into the JSON beside them.
scaling: wall time of generate for --counts images (default 100,1000,5000) with one lever; linear fit and a PNG.

Records /proc/loadavg before and after (rerun when the 1-minute figure was above 1.5), versions and threads.

  # compare, about 10 CPU-minutes on 2 idle cores:
  .venv/bin/python benchmarks/bench_synthesis.py --threads 2 --rounds 2 \\
      --out docs/results/performance/synthesis.json --out-md docs/results/performance/synthesis.md
  # scaling with the lever the comparison found fastest:
  .venv/bin/python benchmarks/bench_synthesis.py --mode scaling --lever onnxruntime --threads 2 \\
      --out docs/results/performance/synthesis_scaling.json --out-md docs/results/performance/synthesis_scaling.md \\
      --plot docs/results/performance/synthesis_scaling.png
  # smoke: a handful of images, 2 sampler steps
  .venv/bin/python benchmarks/bench_synthesis.py --count-per-class 2 --batch-size 2 --steps 2 --baseline-steps 2 \\
      --levers eager,onnxruntime --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_LEVERS = "eager,eager+cl,compile,compile+cl,onnxruntime"


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().strip()


def parse_lever(spec: str) -> dict:
    """'compile+cl+bf16' -> runtime compile, channels_last, bf16 (validated like GenerateConfig does)."""
    from tailsynth.diffusion.runtime import check_runtime

    runtime, *flags = spec.split("+")
    bad = [f for f in flags if f not in ("cl", "bf16")]
    if bad:
        raise SystemExit(f"--levers: unknown flag(s) {bad} in {spec!r} (runtime[+cl][+bf16])")
    lever = {"runtime": runtime, "channels_last": "cl" in flags, "precision": "bf16" if "bf16" in flags else "fp32"}
    check_runtime(**lever)
    return lever


def environment(threads: int) -> dict:
    import diffusers
    import onnxruntime
    import torch

    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    return {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "diffusers": diffusers.__version__, "numpy": np.__version__, "cpu": cpu,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "logical_cpus": os.cpu_count(),
            "torch_threads": threads, "ort_intra_op_threads": threads, "ort_allow_spinning": 0}


def make_baseline_model(shipped: Path, folder: Path) -> Path:
    """The naive baseline as a model folder generate can load: the old `small` UNet at 32 px, untrained (seed 0),
    with the shipped model's noise schedule and classes."""
    import torch

    from tailsynth.diffusion.model import META_FILE, build_unet, read_meta

    meta = read_meta(shipped)
    torch.manual_seed(0)
    build_unet("small", 32, len(meta["classes"])).save_pretrained(folder / "unet", safe_serialization=True)
    shutil.copytree(shipped / "scheduler", folder / "scheduler", dirs_exist_ok=True)
    (folder / META_FILE).write_text(json.dumps({**meta, "size": "small", "resolution": 32, "step": 0,
                                                "weights": "untrained (speed baseline)"}, indent=2))
    return folder


def run_generate(model: Path, out: Path, a, sampler: str, steps: int, guidance: float, lever: dict,
                 count: int) -> dict:
    from tailsynth.diffusion.generate import generate

    if out.exists():
        shutil.rmtree(out)
    c0, t0 = time.process_time(), time.perf_counter()
    res = generate(str(model), a.data, str(out), classes=a.classes, policy="fixed", count=count, sampler=sampler,
                   steps=steps, guidance=guidance, seed=0, batch_size=a.batch_size, threads=a.threads,
                   runtime_cache=a.runtime_cache, device=a.device, **lever)
    call_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    info = res["runtime"]
    return {"n": res["n"], "loop_s": res["wall_s"], "call_s": round(call_s, 3), "process_cpu_s": round(cpu_s, 3),
            "images_per_s": round(res["n"] / res["wall_s"], 3), "images_per_s_call": round(res["n"] / call_s, 3),
            # The loop's share of the process CPU time is not separable; per CPU-second of the whole call.
            "images_per_cpu_s_call": round(res["n"] / cpu_s, 3) if cpu_s > 0 else None,
            "prepare_s": info.get("prepare_s"), "onnx_cached": info.get("onnx_cached"),
            "onnx_parity_max_abs_diff": info.get("onnx_parity_max_abs_diff")}


def image_diffs(ref_dir: Path, other_dir: Path) -> dict:
    """uint8 images of two runs with the same plan and seeds: the largest pixel difference and the share differing."""
    from tailsynth.data.isic import decode_file

    mx, differing, total = 0, 0, 0
    for p in sorted((ref_dir / "images").iterdir()):
        a = decode_file(str(p)).astype(np.int16)
        b = decode_file(str(other_dir / "images" / p.name)).astype(np.int16)
        d = np.abs(a - b)
        mx, differing, total = max(mx, int(d.max())), differing + int((d > 0).sum()), total + d.size
    return {"uint8_max_abs_diff": mx, "uint8_share_differing": round(differing / total, 6) if total else None}


def real_batch(a, res: int):
    """One batch of real inputs: head-class (NV) training backgrounds with their own lesion masks, tail labels."""
    from tailsynth.data import ensure_splits, load_source
    from tailsynth.masks import masks_for_records

    train = ensure_splits(load_source(a.data), seed=0).split("train")
    recs = [r for r in train.records if r.label == "NV"][: a.batch_size]
    bgs = np.stack([train.image(r, res) for r in recs])
    masks, _ = masks_for_records(train, recs, res, images=bgs)
    return bgs, masks


def float_diffs(a, levers: list[dict]) -> list[dict]:
    """Max abs difference against eager fp32 of the float images in [-1, 1] (before quantization) on one real batch
    of the shipped model, same seeds."""
    from tailsynth.diffusion.generate import inpaint, torch_threads
    from tailsynth.diffusion.model import load_model
    from tailsynth.diffusion.runtime import UNetRunner

    unet, sched, meta = load_model(a.model, a.device or "cpu")
    classes = [meta["classes"].index(c) for c in a.classes]
    bgs, masks = real_batch(a, int(meta["resolution"]))
    labels = np.array([classes[i % len(classes)] for i in range(len(bgs))])
    seeds = list(range(len(bgs)))
    out = []
    with torch_threads(a.threads):
        ref = inpaint(unet, sched, bgs, masks, labels, seeds, meta["null_class"], a.sampler, a.steps, a.guidance,
                      unet.device, raw=True)
        for lever in levers:
            if lever == {"runtime": "eager", "channels_last": False, "precision": "fp32"}:
                continue
            runner = UNetRunner(copy.deepcopy(unet), cache_dir=a.runtime_cache, **lever)
            got = inpaint(runner, sched, bgs, masks, labels, seeds, meta["null_class"], a.sampler, a.steps,
                          a.guidance, unet.device, raw=True)
            out.append({**lever, "n_images": len(bgs), "float_max_abs_diff": float(np.abs(got - ref).max()),
                        "float_mean_abs_diff": float(np.abs(got - ref).mean())})
            print(json.dumps({"equivalence": out[-1]}), flush=True)
    return out


def warm_process(a, work: Path) -> None:
    """One tiny generate before any timing: imports, the first read of the data and the page cache are paid here,
    not by whichever configuration happens to run first."""
    run_generate(Path(a.model), work / "warm", a, a.sampler, 1, a.guidance, parse_lever("eager"), 1)
    shutil.rmtree(work / "warm", ignore_errors=True)


def lever_name(lever: dict) -> str:
    return lever["runtime"] + ("+cl" if lever["channels_last"] else "") + (
        "+bf16" if lever["precision"] == "bf16" else "")


def compare(a, work: Path) -> dict:
    from tailsynth.diffusion.model import read_card

    levers = [parse_lever(s) for s in a.levers.split(",")]
    eager = parse_lever("eager")
    base_model = make_baseline_model(Path(a.model), work / "baseline-model")
    configs = [{"name": "baseline: small, ddim 25, g1.5, eager", "model": base_model, "size": "small",
                "resolution": 32, "sampler": a.baseline_sampler, "steps": a.baseline_steps,
                "guidance": a.baseline_guidance, "lever": eager}]
    card = read_card(a.model)
    for lv in levers:
        configs.append({"name": f"shipped: lean, {a.sampler} {a.steps}, g{a.guidance:g}, {lever_name(lv)}",
                        "model": Path(a.model), "size": card.get("size", "?"), "resolution": card.get("resolution"),
                        "sampler": a.sampler, "steps": a.steps, "guidance": a.guidance, "lever": lv})
    runs: dict[str, list[dict]] = {c["name"]: [] for c in configs}
    for rnd in range(a.rounds):
        for i, c in enumerate(configs):
            r = run_generate(c["model"], work / f"out{i}", a, c["sampler"], c["steps"], c["guidance"], c["lever"],
                             a.count_per_class)
            runs[c["name"]].append(r)
            print(json.dumps({"round": rnd, "config": c["name"], **r}), flush=True)
    # The last round's images are still on disk: compare each lever's uint8 images with eager's (same plan, seeds).
    eager_dir = next((work / f"out{i}" for i, c in enumerate(configs) if i > 0 and c["lever"] == eager), None)
    rows = []
    base_ips = None
    for i, c in enumerate(configs):
        rs = runs[c["name"]]
        med = {k: statistics.median(r[k] for r in rs) for k in ("images_per_s", "images_per_s_call",
                                                                 "images_per_cpu_s_call", "loop_s", "call_s")}
        if i == 0:
            base_ips = med
        row = {"name": c["name"], "size": c["size"], "resolution": c["resolution"], "sampler": c["sampler"],
               "steps": c["steps"], "guidance": c["guidance"], **c["lever"], "n_images": rs[0]["n"], **med,
               "speedup": round(med["images_per_s"] / base_ips["images_per_s"], 3),
               "speedup_call": round(med["images_per_s_call"] / base_ips["images_per_s_call"], 3),
               "speedup_per_cpu_s": round(med["images_per_cpu_s_call"] / base_ips["images_per_cpu_s_call"], 3),
               "prepare_s": [r["prepare_s"] for r in rs], "onnx_cached": [r["onnx_cached"] for r in rs],
               "rounds": rs}
        if i > 0 and eager_dir is not None:
            row.update(image_diffs(eager_dir, work / f"out{i}"))
        rows.append(row)
    return {"configs": rows, "equivalence_real_batch": float_diffs(a, levers),
            "gates_from_model_card": {"gate_settings": card.get("gate_settings"), "gates": card.get("gates"),
                                      "weights_hash": card.get("weights_hash")}}


def scaling(a, work: Path) -> dict:
    lever = parse_lever(a.lever)
    rows = []
    per_class = [-(-int(n) // len(a.classes)) for n in a.counts.split(",")]  # ceil: at least n images
    for k in per_class:
        r = run_generate(Path(a.model), work / "scale", a, a.sampler, a.steps, a.guidance, lever, k)
        rows.append(r)
        print(json.dumps({"scaling": lever_name(lever), **r}), flush=True)
    n = np.array([r["n"] for r in rows], float)
    fit = {}
    for key in ("call_s", "loop_s"):
        if len(rows) >= 2:
            slope, icpt = np.polyfit(n, np.array([r[key] for r in rows]), 1)
            fit[key] = {"s_per_image": round(float(slope), 5), "fixed_s": round(float(icpt), 3),
                        "marginal_images_per_s": round(1 / float(slope), 3) if slope > 0 else None}
    return {"lever": lever, "sampler": a.sampler, "steps": a.steps, "guidance": a.guidance, "runs": rows,
            "linear_fit": fit}


def plot_scaling(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in res["runs"]]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(n, [r["call_s"] for r in res["runs"]], "o-", label="generate call (load, prepare, loop, grids)")
    ax.plot(n, [r["loop_s"] for r in res["runs"]], "s--", label="sampling loop (masks, UNet, paste-back, PNG)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images generated")
    ax.set_ylabel("wall time (s)")
    lv = res["lever"]
    ax.set_title(f"generate: {lever_name(lv)}, {res['sampler']} {res['steps']}, g{res['guidance']:g}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(res: dict) -> str:
    env, la = res["environment"], res["loadavg"]
    head = [(f"Load average before: `{la['before']}`, after: `{la['after']}`. torch {env['torch']}, onnxruntime "
            f"{env['onnxruntime']}, diffusers {env['diffusers']}, {env['torch_threads']} threads, batch "
            f"{res['batch_size']}, classes {','.join(res['classes'])}, {env['cpu']} ({env['cpu_capability']})."), ""]
    if res["mode"] == "scaling":
        lines = head + ["| images | generate call (s) | sampling loop (s) | images/s (loop) | prepare (s) |",
                        "|---|---|---|---|---|"]
        lines += [f"| {r['n']} | {r['call_s']:.1f} | {r['loop_s']:.1f} | {r['images_per_s']:.2f} | {r['prepare_s']} |"
                  for r in res["runs"]]
        for k, f in res["linear_fit"].items():
            lines.append(f"\nLinear fit of {k}: {f['fixed_s']} s + {f['s_per_image']} s/image "
                         f"({f['marginal_images_per_s']} images/s at the margin).")
        return "\n".join(lines) + "\n"
    lines = head + [("| configuration | images | images/s (loop) | speedup | images/s (call) | speedup (call) | "
                    "speedup per CPU-s | prepare (s) | uint8 max diff vs eager | share of pixels differing |"),
                    "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["configs"]:
        lines.append(f"| {r['name']} | {r['n_images']} | {r['images_per_s']:.2f} | {r['speedup']:.2f}x | "
                     f"{r['images_per_s_call']:.2f} | {r['speedup_call']:.2f}x | {r['speedup_per_cpu_s']:.2f}x | "
                     f"{', '.join(str(p) for p in r['prepare_s'])} | {r.get('uint8_max_abs_diff', '-')} | "
                     f"{r.get('uint8_share_differing', '-')} |")
    lines += ["", ("Equivalence on one real batch of the shipped model (float images in [-1, 1], same seeds, "
                  "vs eager fp32):"), "", "| lever | images | max abs diff | mean abs diff |", "|---|---|---|---|"]
    lines += [f"| {lever_name(e)} | {e['n_images']} | {e['float_max_abs_diff']:.2e} | {e['float_mean_abs_diff']:.2e} |"
              for e in res["equivalence_real_batch"]]
    lines += ["", ("fp32 levers agree with eager to float rounding, so the model card's gate figures (measured with "
                  "eager fp32) apply to them. A bf16 lever changes the images: its speed counts only with its own "
                  "gates, from `tailsynth synth-quality --precision bf16` compared with fp32 by "
                  "benchmarks/compare_gates.py (the rule: docs/results/performance/synthesis_bf16_plan.md).")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("compare", "scaling"), default="compare")
    p.add_argument("--model", default="models/synth-dermamnist")
    p.add_argument("--data", default="../shared/data/dermamnist/dermamnist.npz")
    p.add_argument("--classes", default="DF,VASC,AK")
    p.add_argument("--count-per-class", type=int, default=64, help="compare: images per class per configuration")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch and ORT intra-op threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=1, help="compare: rounds over all configurations; median counts")
    p.add_argument("--levers", default=DEFAULT_LEVERS, help="runtime[+cl][+bf16], comma-separated")
    p.add_argument("--sampler", default="dpmsolver")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--baseline-sampler", default="ddim")
    p.add_argument("--baseline-steps", type=int, default=25)
    p.add_argument("--baseline-guidance", type=float, default=1.5)
    p.add_argument("--lever", default="eager", help="scaling: the one configuration to scale")
    p.add_argument("--counts", default="100,1000,5000", help="scaling: image counts")
    p.add_argument("--runtime-cache", default=None, help="ONNX cache folder (default: ~/.cache/tailsynth)")
    p.add_argument("--device", default=None)
    p.add_argument("--work", default=None, help="folder for the generated images (default: a temporary one)")
    p.add_argument("--out", default=None)
    p.add_argument("--out-md", default=None)
    p.add_argument("--plot", default=None, help="scaling: PNG of wall time vs images")
    a = p.parse_args(argv)
    a.classes = [c.strip() for c in a.classes.split(",") if c.strip()]
    import torch

    from tailsynth.diffusion.generate import torch_threads

    with torch_threads(a.threads):
        threads = torch.get_num_threads()
    before = loadavg()
    if float(before.split()[0]) > 1.5:
        print(f"warning: load average {before.split()[0]} > 1.5: figures are not idle-machine figures", flush=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench-synthesis-"))
    try:
        warm_process(a, work)
        body = compare(a, work) if a.mode == "compare" else scaling(a, work)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    res = {"mode": a.mode, "loadavg": {"before": before, "after": loadavg()}, "environment": environment(threads),
           "batch_size": a.batch_size, "classes": a.classes, "model": a.model, "data": a.data, **body}
    if a.mode == "scaling" and a.plot:
        plot_scaling(res, a.plot)
        res["plot"] = a.plot
    print(json.dumps({k: v for k, v in res.items() if k not in ("configs", "runs", "gates_from_model_card")}, indent=1))
    for path, text in ((a.out, json.dumps(res, indent=2) + "\n"), (a.out_md, markdown(res) if a.out_md else "")):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    if a.out_md:
        print(markdown(res))
    return res


if __name__ == "__main__":
    main()
