"""Classifier throughput: training and inference images/s per backbone and resolution, in one process.

Variants: baseline (fp32, contiguous), channels_last, torch.compile (--compile; slow to compile on CPU),
and on CUDA bf16 autocast. Reports wall-clock images/s and, on CPU, images per CPU-second of this process
(less sensitive to other processes sharing the cores).

    .venv/bin/python benchmarks/bench_classifier.py --threads 2
    .venv/bin/python benchmarks/bench_classifier.py --backbones resnet18 --resolutions 28 64 --compile --json out.json
"""

from __future__ import annotations

import argparse
import json
import time


def _bench(fn, steps: int, warmup: int, sync) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    sync()
    w, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    sync()
    return time.perf_counter() - w, time.process_time() - c


def run(backbones, resolutions, batch_train: int, batch_infer: int, steps: int, warmup: int, device: str,
        compile_: bool, amp: bool) -> list[dict]:
    import timm
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    variants = [("baseline", False, False), ("channels_last", True, False)]
    if compile_:
        variants.append(("channels_last+compile", True, True))
    rows = []
    for name in backbones:
        for res in resolutions:
            for vname, cl, comp in variants:
                torch.manual_seed(0)
                model = timm.create_model(name, pretrained=False, num_classes=7).to(dev)
                fmt = torch.channels_last if cl else torch.contiguous_format
                model = model.to(memory_format=fmt)
                net = torch.compile(model) if comp else model
                opt = torch.optim.AdamW(model.parameters(), 1e-3)
                xt = torch.randn(batch_train, 3, res, res, device=dev).contiguous(memory_format=fmt)
                yt = torch.randint(0, 7, (batch_train,), device=dev)
                xi = torch.randn(batch_infer, 3, res, res, device=dev).contiguous(memory_format=fmt)
                use_amp = amp and dev.type == "cuda"

                def train_step(net=net, opt=opt, xt=xt, yt=yt, use_amp=use_amp):
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                        loss = F.cross_entropy(net(xt).float(), yt)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                def infer_step(net=net, xi=xi, use_amp=use_amp):
                    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                        net(xi)

                model.train()
                tw, tc = _bench(train_step, steps, warmup, sync)
                model.eval()
                iw, ic = _bench(infer_step, steps, warmup, sync)
                row = {"backbone": name, "res": res, "variant": vname + ("+bf16" if use_amp else ""),
                       "train_img_s": batch_train * steps / tw, "infer_img_s": batch_infer * steps / iw}
                if dev.type == "cpu":
                    row["train_img_per_cpu_s"] = batch_train * steps / max(tc, 1e-9)
                    row["infer_img_per_cpu_s"] = batch_infer * steps / max(ic, 1e-9)
                rows.append(row)
                print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    cpu = "train_img_per_cpu_s" in rows[0]
    head = "| backbone | px | variant | train img/s | infer img/s |"
    sep = "|---|---:|---|---:|---:|"
    if cpu:
        head += " train img/CPU-s | infer img/CPU-s |"
        sep += "---:|---:|"
    lines = [head, sep]
    for r in rows:
        line = f"| {r['backbone']} | {r['res']} | {r['variant']} | {r['train_img_s']:.0f} | {r['infer_img_s']:.0f} |"
        if cpu:
            line += f" {r['train_img_per_cpu_s']:.0f} | {r['infer_img_per_cpu_s']:.0f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "efficientnet_b0"])
    ap.add_argument("--resolutions", nargs="+", type=int, default=[28, 64])
    ap.add_argument("--batch-train", type=int, default=64)
    ap.add_argument("--batch-infer", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile variant (default on CUDA)")
    ap.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args()

    import platform

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    compile_ = a.compile or device == "cuda"
    what = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# torch {torch.__version__} on {what} ({platform.machine()}); batch train {a.batch_train}, "
          f"infer {a.batch_infer}, {a.steps} timed steps after {a.warmup} warm-up", flush=True)
    rows = run(a.backbones, a.resolutions, a.batch_train, a.batch_infer, a.steps, a.warmup, device, compile_,
               not a.no_amp)
    print()
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": what, "torch": str(torch.__version__), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
