"""The checks of issue 16 on a finished run folder (after `make run`), in order, each printed with its outcome:

1. run.yaml holds both DVC revisions (staged real data, selected synthetic set);
2. `tailsynth data pull --run` restores the synthetic set byte-identical into an empty folder;
3. `tailsynth serve --backend onnxruntime` of the exported model answers one image; its record's model version goes
   through `tailsynth lineage --record` and every link is verified;
4. a monitoring window (reference on the train split, the val split replayed) lands in RUN_DIR/monitoring;
5. the run report is rebuilt (now linking the monitoring pages) and screenshots of the run, selection and
   monitoring reports are written with tools/report_screenshots.py.

    python tools/finish_run.py runs/main [--shots docs/results/reports] [--port 8091]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _same_tree(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all(filecmp.cmp(a / p, b / p, shallow=False) for p in fa)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--shots", type=Path, default=ROOT / "docs" / "results" / "reports")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    run = args.run_dir.resolve()
    exe = str(Path(sys.executable).parent / "tailsynth")

    from tailsynth.data.source import source_in
    from tailsynth.data.versioning import pull_run, run_versions
    from tailsynth.lineage import format_chain, trace
    from tailsynth.pipeline_report import finalize_run_report
    from tailsynth.serve.client import predict_files
    from tailsynth.serve.ports import free_port, wait_http_ready

    sets = run_versions(run)["sets"]
    print(f"1. run.yaml: real {sets['real']['md5']} (pushed {sets['real']['pushed']}), "
          f"synthetic {sets['synthetic']['md5']} (pushed {sets['synthetic']['pushed']})")

    dest = Path(tempfile.mkdtemp(prefix="restored-synthetic-")) / "synthetic"
    res = pull_run(run, dest)
    same = _same_tree(Path(sets["synthetic"]["uri"]), dest)
    print(f"2. pulled {res['files']} files from {res['remote']} into {dest}: byte-identical {same}")

    card = json.loads((run / "model" / "model_card.json").read_text())
    cards = [p for p in (run / "artifacts").rglob("model_card.json") if json.loads(p.read_text()).get("version") ==
             card["version"]]
    repo = cards[0].parent.parent
    port = args.port or free_port()
    records = run / "monitoring" / "served.jsonl"
    records.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([exe, "serve", "--repo", str(repo), "--backend", "onnxruntime", "--port", str(port),
                             "--records", str(records), "--token", "finish-run"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc, 180)
        import numpy as np
        from PIL import Image

        data = source_in(sets["real"]["uri"])
        png = Path(tempfile.mkdtemp()) / "val0.png"
        Image.fromarray(np.load(data)["val_images"][0]).save(png)
        list(predict_files(f"http://127.0.0.1:{port}", [png], token="finish-run"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    line = records.read_text().splitlines()[-1]
    chain = trace(record=line, runs=[run.parent])
    print("3. lineage of the served record:\n" + format_chain(chain, max_images=3))
    checks = [chain["classifier_run"].get("verified"), chain["real_data"].get("verified")]
    if chain.get("synthetic_set"):
        checks += [chain["synthetic_set"].get("verified"), (chain.get("synthesizer") or {}).get("verified")]
    print(f"   links verified: {checks}")

    model_dir = chain["classifier_run"]["model_dir"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    subprocess.run([exe, "monitor", "reference", "--model", model_dir, "--data", str(data), "--split", "train"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    log = run / "monitoring" / "replay.jsonl"
    log.unlink(missing_ok=True)
    subprocess.run([exe, "monitor", "score", "--model", model_dir, "--data", str(data), "--split", "val",
                    "--out", str(log)], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([exe, "monitor", "report", "--log", str(log), "--reference",
                    str(Path(model_dir) / "monitor" / "reference.jsonl"), "--out", str(run / "monitoring" / "val-replay")],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    print(f"4. monitoring window in {run / 'monitoring' / 'val-replay'}")

    finalize_run_report(run)
    shots = subprocess.run([sys.executable, str(ROOT / "tools" / "report_screenshots.py"), str(run),
                            "--out", str(args.shots)], env=env, check=False)
    print(f"5. report rebuilt; screenshots in {args.shots} (exit {shots.returncode})")
    ok = same and all(c is not False for c in checks) and shots.returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
