"""Main-job scaling: wall time of the train_augment pipeline vs the number of training images, per stage.

Runs the main job (the `run_pipeline` that `make run` / `tailsynth main` call, through `tailsynth pipeline run
--local`, KFP's SubprocessRunner) once per train fraction, one after another, each in a fresh process and its own
run folder, and reads each run's per-task seconds (`task_seconds` in run.yaml: finish minus previous finish) and
wall time. The fraction is a pipeline parameter (`train_fraction`, applied in the split stage), so every task
downstream of the split gets a different cache key and different inputs; the task cache (`--cache`) stays off as
in `make run`, so no run reuses another's work. Writes a JSON, a markdown table (rows: stages, columns: fractions)
and a plot of wall time vs training images (total and the heavy stages). /proc/loadavg is recorded around each
run; a figure taken at a load average above 1.5 is marked.

    .venv/bin/python benchmarks/bench_mainjob.py --runs-dir runs/bench-mainjob \\
        --out docs/results/performance/mainjob_scaling.json --out-md docs/results/performance/mainjob_scaling.md \\
        --plot docs/results/performance/mainjob_scaling.png
    .venv/bin/python benchmarks/bench_mainjob.py --profile tiny --fractions 0.5 1.0 --runs-dir /tmp/bench-tiny
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_STAGE = "pipeline train_augment"  # its entry in run.yaml (pipelines/local.py)
LOADED = 1.5  # load average above which a timing is not trusted (issue 14)
HEAVY_SHARE = 0.05  # a stage is plotted when it takes at least this share of the largest run's wall time


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().strip()


def machine() -> dict:
    from tailsynth.runinfo import package_versions

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "packages": package_versions()}


def train_counts(manifest: Path) -> dict[str, int]:
    """Per-class image counts of the train split in a run's split manifest."""
    counts: dict[str, int] = {}
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == "train":
                counts[row["label"]] = counts.get(row["label"], 0) + 1
    return counts


def run_once(fraction: float, profile: str, data: Path, out: Path, sets: list[str], log: Path) -> dict:
    """One main-job run at FRACTION into OUT; its timings and training-set size."""
    cmd = [sys.executable, "-m", "tailsynth.cli", "pipeline", "run", "--local", "--profile", profile,
           "--data", str(data), "--out", str(out), "--set", f"train_fraction={fraction}"]
    for s in sets:
        cmd += ["--set", s]
    # This checkout's code, whichever checkout the venv was installed from.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    before = loadavg()
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        rc = subprocess.run(cmd, check=False, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.monotonic() - t0
    after = loadavg()
    if rc != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"main job at train_fraction={fraction} failed (exit {rc}); log {log}:\n{tail}")
    return {**read_timings(out, fraction), "log": str(log), "command": cmd, "wall_seconds_process": round(wall, 1),
            "loadavg_before": before, "loadavg_after": after,
            "loaded": max(float(before.split()[0]), float(after.split()[0])) > LOADED}


def read_timings(out: Path, fraction: float) -> dict:
    """A finished run folder's per-task seconds, pipeline wall time and training-set size (run.yaml, manifest)."""
    from tailsynth.runinfo import read_run

    stage = read_run(out)["stages"][PIPELINE_STAGE]
    if stage["params"].get("train_fraction", 1.0) != fraction:  # runs from before the parameter used all data
        raise RuntimeError(f"{out}/run.yaml records train_fraction {stage['params'].get('train_fraction')}, "
                           f"not {fraction}: the parameter did not reach the run")
    manifest = Path(stage["report_stage_dir"]).parents[1] / "split" / "splits"
    per_class = train_counts(manifest)
    return {"fraction": fraction, "out": str(out), "train_images": sum(per_class.values()),
            "train_per_class": per_class, "wall_seconds_pipeline": stage["wall_seconds"],
            "task_seconds": {t["stage"]: t["seconds"] for t in stage["task_seconds"]}}


def stage_order(runs: list[dict]) -> list[str]:
    """Stages in the execution order of the largest run, then any seen only elsewhere."""
    order: list[str] = []
    for r in sorted(runs, key=lambda r: -r["fraction"]):
        order += [s for s in r["task_seconds"] if s not in order]
    return order


def linear_fit(runs: list[dict], key: str = "wall_seconds_pipeline") -> dict | None:
    """Least-squares wall = fixed + per_image * n over the runs: the part of the job that does not grow with the
    data (start-up, synthesis, export) and the part that does."""
    if len({r["train_images"] for r in runs}) < 2:
        return None
    import numpy as np

    n = np.array([r["train_images"] for r in runs], float)
    y = np.array([r[key] for r in runs], float)
    slope, fixed = np.polyfit(n, y, 1)
    return {"fixed_seconds": round(float(fixed), 1), "seconds_per_1000_images": round(1000 * float(slope), 1)}


def markdown(result: dict) -> str:
    runs = sorted(result["runs"], key=lambda r: r["fraction"])
    head = "| stage | " + " | ".join(f"{r['fraction']:g} ({r['train_images']} images)" for r in runs) + " |"
    lines = [head, "|---|" + "---:|" * len(runs)]
    for s in result["stages"]:
        lines.append(f"| {s} | " + " | ".join(f"{r['task_seconds'].get(s, 0.0):.1f}" for r in runs) + " |")
    lines.append("| **total (pipeline wall)** | " + " | ".join(f"**{r['wall_seconds_pipeline']:.1f}**" for r in runs)
                 + " |")
    lines.append("| process wall (with CLI start-up) | " + " | ".join(f"{r['wall_seconds_process']:.1f}" for r in runs)
                 + " |")
    lines.append("| training images | " + " | ".join(str(r["train_images"]) for r in runs) + " |")
    lines.append("| load average before / after | " + " | ".join(
        f"{r['loadavg_before'].split()[0]} / {r['loadavg_after'].split()[0]}" + (" (loaded)" if r["loaded"] else "")
        for r in runs) + " |")
    text = [f"Main job (profile `{result['profile']}`), seconds per stage; task cache off.", "", *lines]
    if result.get("fit"):
        f = result["fit"]
        text += ["", (f"Least-squares fit of the pipeline wall: {f['fixed_seconds']} s fixed + "
                      f"{f['seconds_per_1000_images']} s per 1,000 training images.")]
    return "\n".join(text) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(result["runs"], key=lambda r: r["train_images"])
    n = [r["train_images"] for r in runs]
    largest = max(runs, key=lambda r: r["fraction"])
    heavy = [s for s in result["stages"]
             if largest["task_seconds"].get(s, 0.0) >= HEAVY_SHARE * largest["wall_seconds_pipeline"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(n, [r["wall_seconds_pipeline"] for r in runs], "o-", lw=2.5, color="black", label="total (pipeline wall)")
    for s in heavy:
        ax.plot(n, [r["task_seconds"].get(s, 0.0) for r in runs], "o--", label=s)
    ax.set_xlabel("training images")
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"Main job (profile {result['profile']}): wall time vs training images", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--profile", default="cpu", help="cpu (the main job) | tiny (a smoke run of this script)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="as `make run`'s DATA")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-mainjob",
                    help="one run folder per fraction, fraction-<f>, is made here")
    ap.add_argument("--replace", action="store_true", help="delete run folders left by an earlier benchmark")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="another profile override, KEY=VALUE")
    ap.add_argument("--out", type=Path, help="JSON with every run's timings")
    ap.add_argument("--out-md", type=Path, help="markdown table: stages x fractions")
    ap.add_argument("--plot", type=Path, help="PNG: wall time vs training images")
    a = ap.parse_args(argv)
    if any(not 0 < f <= 1 for f in a.fractions):
        ap.error(f"--fractions must lie in (0, 1], got {a.fractions}")
    if any(s.split("=", 1)[0].strip() == "train_fraction" for s in a.sets):
        ap.error("--set train_fraction=...: the fractions come from --fractions")
    folders = {f: a.runs_dir / f"fraction-{f:g}" for f in a.fractions}
    left = [p for p in folders.values() if p.exists()]
    if left and not a.replace:
        ap.error(f"{', '.join(map(str, left))} exist(s) from an earlier benchmark; pass --replace or another --runs-dir")
    for p in left:
        shutil.rmtree(p)
    a.runs_dir.mkdir(parents=True, exist_ok=True)

    result = {"benchmark": "mainjob_scaling", "profile": a.profile, "data": str(a.data.resolve()),
              "fractions": a.fractions, "sets": a.sets, "task_cache": "off", "machine": machine(),
              "loadavg_start": loadavg(), "runs": []}
    for f, folder in folders.items():
        print(f"train_fraction={f:g} -> {folder} (load {loadavg()})", flush=True)
        row = run_once(f, a.profile, a.data, folder, a.sets, a.runs_dir / f"fraction-{f:g}.log")
        result["runs"].append(row)
        print(f"  {row['train_images']} training images: {row['wall_seconds_pipeline']} s pipeline, "
              f"{row['wall_seconds_process']} s process (load {row['loadavg_before'].split()[0]} -> "
              f"{row['loadavg_after'].split()[0]})", flush=True)
    result["loadavg_end"] = loadavg()
    if any(r["loaded"] for r in result["runs"]):
        print(f"warning: a load average above {LOADED} during a run: rerun on an idle machine", file=sys.stderr)
    print(write_outputs(result, a.out, a.out_md, a.plot))
    return 0


def write_outputs(result: dict, out: Path | None, out_md: Path | None, png: Path | None) -> str:
    """Add the stage order and the linear fit to RESULT, write the JSON, the table and the plot; return the table."""
    result["stages"] = stage_order(result["runs"])
    result["fit"] = linear_fit(result["runs"])
    table = markdown(result)
    for path, text in ((out, json.dumps(result, indent=2) + "\n"), (out_md, table)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if png:
        plot(result, png)
    return table


if __name__ == "__main__":
    sys.exit(main())
