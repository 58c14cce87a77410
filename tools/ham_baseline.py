"""The HAM10000 real-only baseline comparison, amendment 1 of docs/results/classifier_comparison_ham.md (issue 28).

Stage 1 (folds 0-1, CE + class-balanced sampler): backbone x schedule, and one fp32 run beside bf16. Its rule
(`stage1_decision`, written before the run) picks the backbone and the length. Stage 2: the chosen recipe, six
methods, five lesion-grouped folds. Every run trains in its own folder and is skipped when finished, so the
script resumes where it stopped; after each run one row is appended to RESULTS/runs.csv and the tables are
rewritten, so results can be committed fold by fold.

    nice -n 10 .venv/bin/python tools/ham_baseline.py --data ../shared/data/ham10000 --out runs/ham_baseline \
        --results docs/results/ham_baseline
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

RESOLUTION = 64
FOLDS = 5
REFERENCE = "class-balanced-sampler"
# name, backbone, pretrained, epochs, precision, folds
STAGE1 = [
    ("lite0-imagenet-e6", "tf_efficientnet_lite0", "imagenet", 6, "auto", (0, 1)),
    ("resnet18-scratch-e6", "resnet18", None, 6, "auto", (0, 1)),
    ("lite0-imagenet-e12", "tf_efficientnet_lite0", "imagenet", 12, "auto", (0, 1)),
    ("resnet18-scratch-e12", "resnet18", None, 12, "auto", (0, 1)),
    ("resnet18-scratch-e6-fp32", "resnet18", None, 6, "fp32", (0,)),  # the precision check beside the bf16 run
]
STAGE2_METHODS = [REFERENCE, "balanced-softmax", "ce+posthoc", "ce+crt", "class-balanced-sampler+mixup", "ce-drw"]
# Methods that need more than one training (a re-training stage): the tie-break prefers the others.
NEEDS_MORE = {"ce+crt", "balanced-softmax+crt"}
CLASSES = ["AK", "BCC", "BKL", "DF", "MEL", "NV", "VASC"]
FIELDS = ["stage", "config", "backbone", "pretrained", "epochs", "precision_train", "precision_infer", "method", "fold",
          "balanced_accuracy", "accuracy"] + [f"recall_{c}" for c in CLASSES] + [
          "selected_epoch", "train_images_per_s", "train_wall_s", "run_wall_s", "load_average", "cpu", "finished_at"]


def _isa() -> str:
    from tailsynth.classify.precision import cpu_model, isa_summary

    return f"{cpu_model()}; {isa_summary()}"


def run_row(stage: str, config: str, run_dir: Path, method: str, fold: int, run_wall: float) -> dict:
    import yaml

    from tailsynth.metrics import confusion_matrix, per_class_from_confusion
    from tailsynth.evaluation.predictions import PREDICTIONS, load_predictions

    p = load_predictions(run_dir / PREDICTIONS.format(part="test"))
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    hist = json.loads((run_dir / "history.json").read_text())
    rec = per_class_from_confusion(confusion_matrix(p["y"], p["probs"].argmax(1), len(p["classes"])))["recall"]
    rec = dict(zip(p["classes"], rec))
    pred = p["probs"].argmax(1)
    bma = float(np.nanmean([rec[c] for c in p["classes"]]))
    return {"stage": stage, "config": config, "backbone": cfg["backbone"], "pretrained": cfg.get("pretrained") or "",
            "epochs": cfg["epochs"], "precision_train": _prec(cfg.get("precision_train")),
            "precision_infer": _prec(cfg.get("precision_infer")), "method": method, "fold": fold,
            "balanced_accuracy": round(bma, 4), "accuracy": round(float((pred == p["y"]).mean()), 4),
            **{f"recall_{c}": round(float(rec[c]), 4) for c in CLASSES},
            "selected_epoch": cfg.get("selected_epoch"),
            "train_images_per_s": round(float(np.mean([h["images_per_s"] for h in hist])), 1),
            "train_wall_s": round(sum(h["train_s"] for h in hist), 1), "run_wall_s": round(run_wall, 1),
            "load_average": round(os.getloadavg()[0], 2), "cpu": _isa(), "finished_at": time.strftime("%Y-%m-%d %H:%M")}


def _prec(d: dict | None) -> str:
    if not d:
        return ""
    return d["precision"] + ("+cl" if d["channels_last"] else "")


def keep_predictions(results: Path, out: Path, stage: str, config: str, method: str, fold: int) -> Path:
    """A copy of one run's held-out predictions in RESULTS (committed with runs.csv; fp16, about 25 KB): the paired
    comparisons can be recomputed even when the run folders are gone (another machine, another session)."""
    from tailsynth.evaluation.predictions import PREDICTIONS

    dst = results / "predictions" / f"stage{stage}" / config / method / f"fold{fold}.npz"
    if dst.is_file():
        return dst
    with np.load(out / "runs" / method / f"fold{fold}_seed0" / PREDICTIONS.format(part="test")) as z:
        data = {k: z[k] for k in z.files}
    data["probs"] = data["probs"].astype(np.float16)
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dst, **data)
    return dst


def restore_predictions(results: Path, out: Path, stage: str, config: str, method: str, fold: int) -> bool:
    """Put a kept copy back where the comparison reads it, when the run folder was lost."""
    from tailsynth.evaluation.predictions import PREDICTIONS

    src = results / "predictions" / f"stage{stage}" / config / method / f"fold{fold}.npz"
    dst = out / "runs" / method / f"fold{fold}_seed0" / PREDICTIONS.format(part="test")
    if dst.is_file() or not src.is_file():
        return dst.is_file()
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    data["probs"] = data["probs"].astype(np.float32)
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **data)
    return True


def read_rows(results: Path) -> list[dict]:
    f = results / "runs.csv"
    if not f.is_file():
        return []
    with open(f, newline="") as fh:
        return list(csv.DictReader(fh))


def append_row(results: Path, row: dict) -> None:
    f = results / "runs.csv"
    new = not f.is_file()
    results.mkdir(parents=True, exist_ok=True)
    with open(f, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())


def one_run(data, out: Path, results: Path, stage: str, config: str, method: str, fold: int, backbone: str,
            pretrained, epochs: int, precision: str, log) -> None:
    from tailsynth.evaluation.methods import run_method_comparison

    done = {(r["stage"], r["config"], r["method"], int(r["fold"])) for r in read_rows(results)}
    if (stage, config, method, fold) in done:
        if not restore_predictions(results, out, stage, config, method, fold):
            log(f"  {stage} {config} {method} fold {fold}: in runs.csv but its predictions are lost")
        elif not (results / "predictions" / f"stage{stage}" / config / method / f"fold{fold}.npz").is_file():
            keep_predictions(results, out, stage, config, method, fold)  # runs finished before copies were kept
        return
    t0 = time.time()
    log(f"[{time.strftime('%H:%M:%S')}] {stage} {config} {method} fold {fold} ...")
    train_kw = {"resolution": RESOLUTION, "precision": precision, **({"pretrained": pretrained} if pretrained else {})}
    run_method_comparison(data, out, [method], folds=FOLDS, seeds=[0], backbone=backbone, epochs=epochs,
                          n_boot=0, train_kw=train_kw, quiet=True, only_folds=[fold])
    row = run_row(stage, config, out / "runs" / method / f"fold{fold}_seed0", method, fold, time.time() - t0)
    keep_predictions(results, out, stage, config, method, fold)
    append_row(results, row)
    log(f"  BMA {row['balanced_accuracy']:.4f} (DF {row['recall_DF']}, VASC {row['recall_VASC']}, AK {row['recall_AK']})"
        f" {row['train_images_per_s']} img/s, {row['run_wall_s']} s, load {row['load_average']}")


def _mean(rows, **match) -> tuple[float | None, int]:
    v = [float(r["balanced_accuracy"]) for r in rows if all(str(r[k]) == str(x) for k, x in match.items())]
    return (float(np.mean(v)) if v else None), len(v)


def stage1_decision(rows: list[dict]) -> dict | None:
    """The rule written in amendment 1 before the run. For each backbone, its score is the mean BMA over folds
    0-1 at its better length. The backbone with the higher score wins; within 0.01, the one with the shorter
    measured wall time per run at 6 epochs. E* = 6 unless the winner's 12-epoch mean beats its 6-epoch mean by
    more than 0.01. None until every stage-1 run of folds 0-1 is in."""
    s1 = [r for r in rows if r["stage"] == "1"]
    cand = {}
    for name, bb, pre, ep, prec, folds in STAGE1:
        if prec != "auto":
            continue
        m, n = _mean(s1, config=name)
        if n < len(folds):
            return None
        cand.setdefault(bb, {})[ep] = m
    score = {bb: max(v.values()) for bb, v in cand.items()}
    wall = {bb: float(np.mean([float(r["run_wall_s"]) for r in s1 if r["backbone"] == bb and int(r["epochs"]) == 6
                               and r["config"].endswith("e6")])) for bb in cand}
    order = sorted(score, key=lambda b: -score[b])
    best, second = order[0], order[1]
    why = f"{best} scores {score[best]:.4f} vs {second} {score[second]:.4f}"
    if score[best] - score[second] <= 0.01 and wall[second] < wall[best]:
        best, why = second, why + f"; within 0.01, {second} is cheaper ({wall[second]:.0f} s vs {wall[best]:.0f} s per run)"
    e6, e12 = cand[best][6], cand[best][12]
    epochs = 12 if e12 - e6 > 0.01 else 6
    pre = next(p for _, bb, p, *_ in STAGE1 if bb == best)
    return {"backbone": best, "pretrained": pre, "epochs": epochs, "scores": score, "by_length": cand,
            "wall_s_per_run_e6": wall, "why": why + f"; E* = {epochs} ({best}: 6 epochs {e6:.4f}, 12 epochs {e12:.4f})"}


def precision_check(rows: list[dict], out: Path, results: Path) -> dict | None:
    """bf16 vs fp32 on fold 0 (resnet18, 6 epochs): paired bootstrap interval of ΔBMA over images; same within
    noise when that interval holds 0 (rule of amendment 1)."""
    from tailsynth.evaluation.predictions import PREDICTIONS, load_predictions
    from tailsynth.evaluation.stats import compare

    for cfg in ("resnet18-scratch-e6", "resnet18-scratch-e6-fp32"):
        restore_predictions(results, out / "stage1" / cfg, "1", cfg, REFERENCE, 0)
    a = out / "stage1" / "resnet18-scratch-e6" / "runs" / REFERENCE / "fold0_seed0" / PREDICTIONS.format(part="test")
    b = out / "stage1" / "resnet18-scratch-e6-fp32" / "runs" / REFERENCE / "fold0_seed0" / PREDICTIONS.format(part="test")
    if not (a.is_file() and b.is_file()):
        return None
    pa, pb = load_predictions(a), load_predictions(b)
    c = compare({"fold0_seed0": pb}, {"fold0_seed0": pa}, pa["classes"], ["AK", "DF", "VASC"], 2000, passes="seed")
    d = c["bootstrap"]["balanced_accuracy"]
    return {"delta_bma_bf16_minus_fp32": d, "same_within_noise": bool(d["ci95"][0] <= 0 <= d["ci95"][1]),
            "mcnemar_p": c.get("mcnemar_p_max")}


def stage2_winner(arms: dict) -> dict:
    """The rule of the original protocol: the highest mean BMA wins; when it needs a re-training stage, a method
    within 0.005 of it that needs none wins instead (the best such one)."""
    bma = {m: a["balanced_accuracy"]["mean"] for m, a in arms.items() if a["balanced_accuracy"]["mean"] is not None}
    top = max(bma, key=bma.get)
    win, why = top, f"{top} has the highest mean BMA ({bma[top]:.4f})"
    if top in NEEDS_MORE:
        near = [m for m in bma if m not in NEEDS_MORE and bma[top] - bma[m] <= 0.005]
        if near:
            win = max(near, key=bma.get)
            why += f"; {win} ({bma[win]:.4f}) is within 0.005 and needs no re-training stage, so it wins"
    return {"winner": win, "why": why, "mean_bma": bma}


def write_tables(results: Path, out: Path, decision1: dict | None, check: dict | None) -> None:
    rows = read_rows(results)
    lines = [f"Generated by tools/ham_baseline.py from runs.csv ({len(rows)} finished runs); CPU: {_isa()}.", ""]
    for stage in ("1", "2"):
        rs = [r for r in rows if r["stage"] == stage]
        if not rs:
            continue
        lines += [f"### Stage {stage}: every finished run", "",
                  "| config | method | fold | BMA | acc | AK | DF | VASC | MEL | sel. epoch | precision (train/infer) | "
                  "train img/s | run s | load |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
        for r in rs:
            lines.append(f"| {r['config']} | {r['method']} | {r['fold']} | {float(r['balanced_accuracy']):.4f} | "
                         f"{float(r['accuracy']):.3f} | {float(r['recall_AK']):.2f} | {float(r['recall_DF']):.2f} | "
                         f"{float(r['recall_VASC']):.2f} | {float(r['recall_MEL']):.2f} | {r['selected_epoch']} | "
                         f"{r['precision_train']}/{r['precision_infer']} | {r['train_images_per_s']} | "
                         f"{r['run_wall_s']} | {r['load_average']} |")
        lines.append("")
    if decision1:
        lines += ["### Stage 1 decision (the rule of amendment 1, applied by the script)", "",
                  f"**{decision1['backbone']}** (pretrained: {decision1['pretrained'] or 'no'}), **{decision1['epochs']} "
                  f"epochs**: {decision1['why']}.", ""]
    if check:
        d = check["delta_bma_bf16_minus_fp32"]
        lines += ["### bf16 vs fp32 (resnet18, 6 epochs, fold 0)", "",
                  f"ΔBMA bf16 − fp32 = {d['delta']:+.4f}, paired bootstrap 95% interval [{d['ci95'][0]:+.4f}, "
                  f"{d['ci95'][1]:+.4f}] over images; McNemar p = {check['mcnemar_p']}: "
                  f"**{'same within noise' if check['same_within_noise'] else 'NOT the same within noise'}**.", ""]
    (results / "results.md").write_text("\n".join(lines))
    (results / "decisions.json").write_text(json.dumps({"stage1": decision1, "precision_check": check}, indent=1,
                                                       default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, type=Path, help="run folders (resumable)")
    ap.add_argument("--results", required=True, type=Path, help="runs.csv, results.md, decisions.json")
    ap.add_argument("--stage", choices=["1", "2", "all"], default="all")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    log = lambda *m: print(*m, flush=True)  # noqa: E731
    a.results.mkdir(parents=True, exist_ok=True)
    log(f"CPU: {_isa()}")
    if a.stage in ("1", "all"):
        # fold-major order: the first fold of every config comes in before any second fold
        for fold in (0, 1):
            for name, bb, pre, ep, prec, folds in STAGE1:
                if fold in folds:
                    one_run(a.data, a.out / "stage1" / name, a.results, "1", name, REFERENCE, fold, bb, pre, ep, prec,
                            log)
                    rows = read_rows(a.results)
                    write_tables(a.results, a.out, stage1_decision(rows), precision_check(rows, a.out, a.results))
    rows = read_rows(a.results)
    d1 = stage1_decision(rows)
    write_tables(a.results, a.out, d1, precision_check(rows, a.out, a.results))
    if a.stage == "1" or d1 is None:
        return
    name = f"{'lite0-imagenet' if d1['pretrained'] else 'resnet18-scratch'}-e{d1['epochs']}"
    s2 = a.out / "stage2"
    for fold in range(FOLDS):
        for m in STAGE2_METHODS:
            s1 = next((r for r in read_rows(a.results) if r["stage"] == "1" and r["config"] == name
                       and r["method"] == m and int(r["fold"]) == fold), None)
            done2 = any(r["stage"] == "2" and r["method"] == m and int(r["fold"]) == fold for r in read_rows(a.results))
            if s1 is not None and not done2:
                # the same recipe, split and seed already ran in stage 1: reuse its result instead of training
                # it again (from its kept predictions, so this works without the stage-1 run folder)
                restore_predictions(a.results, a.out / "stage1" / name, "1", name, m, fold)
                src = a.out / "stage1" / name / "runs" / m / f"fold{fold}_seed0"
                dst = s2 / "runs" / m / f"fold{fold}_seed0"
                if not dst.exists():
                    shutil.copytree(src, dst)
                keep_predictions(a.results, s2, "2", name, m, fold)
                append_row(a.results, {**s1, "stage": "2"})
                log(f"  stage 2 {m} fold {fold}: reused from stage 1 (BMA {s1['balanced_accuracy']})")
            else:
                one_run(a.data, s2, a.results, "2", name, m, fold, d1["backbone"], d1["pretrained"], d1["epochs"],
                        "auto", log)
            write_tables(a.results, a.out, d1, precision_check(read_rows(a.results), a.out, a.results))
    from tailsynth.evaluation.methods import run_method_comparison

    for fold in range(FOLDS):
        for m in STAGE2_METHODS:
            restore_predictions(a.results, s2, "2", name, m, fold)
    train_kw = {"resolution": RESOLUTION, "precision": "auto", **({"pretrained": d1["pretrained"]} if d1["pretrained"] else {})}
    res = run_method_comparison(a.data, s2, STAGE2_METHODS, folds=FOLDS, seeds=[0], backbone=d1["backbone"],
                                epochs=d1["epochs"], n_boot=1000, train_kw=train_kw, quiet=True, collect_only=True)
    shutil.copy(s2 / "comparison.md", a.results / "stage2_comparison.md")
    shutil.copy(s2 / "results.json", a.results / "stage2_results.json")
    win = stage2_winner(res["results"]["parts"]["test"]["arms"])
    dec = json.loads((a.results / "decisions.json").read_text())
    (a.results / "decisions.json").write_text(json.dumps({**dec, "stage2": win}, indent=1, default=str))
    log(f"stage 2 done; winner: {win['why']}")


if __name__ == "__main__":
    main()
