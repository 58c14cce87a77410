"""Moved to benchmarks/bench_serving.py (torch eager vs Triton direct vs the Triton endpoint, one run).

This name stays so that the command in docs/results/serving_loadtest.md still runs; `--repo REPO` (an existing
local export) is now `--model REPO`.

  python serving/loadtest.py --requests 256 --concurrency 1 8 32 --out-md out.md
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--repo" in argv:  # the old spelling: --model MODEL_DIR --repo REPO -> --model REPO
        i = argv.index("--repo")
        repo = argv[i + 1]
        del argv[i : i + 2]
        if "--model" in argv:
            j = argv.index("--model")
            del argv[j : j + 2]
        argv += ["--model", repo]
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_serving.py"
    sys.argv = [str(script), *argv]
    runpy.run_path(str(script), run_name="__main__")
