"""Classifier throughput side by side in one process: fp32 / bf16 autocast x contiguous / channels_last, training
and inference images/s per backbone and resolution, with the CPU's ISA flags and the load average beside them.

It measures with the same function that `--precision auto` uses (`tailsynth.classify.precision.measure`), and
prints which variant auto would pick from these figures.

    .venv/bin/python benchmarks/bench_classifier.py
    .venv/bin/python benchmarks/bench_classifier.py --backbones resnet18 tf_efficientnet_lite0 --resolutions 28 64 \
        --json docs/results/classifier_bench.json --markdown docs/results/classifier_bench.md
"""

from __future__ import annotations

import argparse
import json
import os
import time


def table(rows: list[dict]) -> str:
    lines = ["| backbone | px | precision | channels_last | train img/s | train img/CPU-s | infer img/s | infer img/CPU-s |",
             "|---|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['res']} | {r['precision']} | {'yes' if r['channels_last'] else 'no'} | "
                     f"{r['train_img_s']:.0f} | {r['train_img_per_cpu_s']:.0f} | {r['infer_img_s']:.0f} | "
                     f"{r['infer_img_per_cpu_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "tf_efficientnet_lite0"])
    ap.add_argument("--resolutions", nargs="+", type=int, default=[64])
    ap.add_argument("--batch-train", type=int, default=64)
    ap.add_argument("--batch-infer", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write the rows and the machine here")
    ap.add_argument("--markdown", default=None, help="write the table here")
    a = ap.parse_args()

    import torch

    from tailsynth.classify.precision import VARIANTS, candidates, choose, cpu_model, isa_summary, measure, native_bf16

    if a.threads:
        torch.set_num_threads(a.threads)
    load0 = os.getloadavg()[0]
    head = (f"torch {torch.__version__}, {cpu_model()}, {torch.get_num_threads()} threads; ISA: {isa_summary()}; "
            f"native bf16: {native_bf16()}; batch train {a.batch_train}, infer {a.batch_infer}; {a.steps} timed steps "
            f"after {a.warmup} warm-up; load average at start {load0:.2f}")
    print("# " + head, flush=True)
    rows, picks = [], []
    t0 = time.time()
    for bb in a.backbones:
        for res in a.resolutions:
            tr = measure(bb, res, a.batch_train, "train", VARIANTS, a.steps, a.warmup, device=a.device)
            inf = measure(bb, res, a.batch_infer, "infer", VARIANTS, a.steps, a.warmup, device=a.device)
            for t, i in zip(tr, inf):
                row = {"backbone": bb, "res": res, "precision": t["precision"], "channels_last": t["channels_last"],
                       "train_img_s": t["images_per_s"], "train_img_per_cpu_s": t["images_per_cpu_s"],
                       "infer_img_s": i["images_per_s"], "infer_img_per_cpu_s": i["images_per_cpu_s"]}
                rows.append(row)
                print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            for purpose, ms in (("train", tr), ("infer", inf)):
                allowed = candidates(purpose, native_bf16())
                ok = [m for m in ms if (m["precision"], m["channels_last"]) in allowed]
                prec, cl, why = choose(ok)
                picks.append(f"- {bb} at {res} px, {purpose}: auto picks **{prec}{' + channels_last' if cl else ''}**"
                             f" ({why})")
    load1 = os.getloadavg()[0]
    md = (f"Measured {time.strftime('%Y-%m-%d %H:%M')} UTC: {head}; load average at end {load1:.2f}; "
          f"{time.time() - t0:.0f} s in all.\n\n" + table(rows) + "\n\n" + "\n".join(picks) + "\n")
    print()
    print(md)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": head, "load_start": load0, "load_end": load1, "rows": rows, "picks": picks}, f,
                      indent=1)


if __name__ == "__main__":
    main()
