"""Screenshots of a run folder's reports (run, OOD selection, monitoring index) in headless Chromium, after checking
that every image and link on each page resolves.

    python tools/report_screenshots.py RUN_DIR [--out docs/results] [--monitoring DIR] [--prefix NAME]

RUN_DIR is a `make run` / `tailsynth pipeline run --local` output (report.html, selection/report.html); the
monitoring index is RUN_DIR/monitoring/index.html unless --monitoring names another folder holding index.html.
Writes OUT/<prefix>run_report.png, <prefix>selection_report.png, <prefix>monitoring_index.png and prints what
it checked. Exit 1 when a page has a broken image or link.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.browser import Chromium, broken_references


def pages_of(run_dir: Path, monitoring: Path | None) -> dict[str, Path]:
    pages = {"run_report": run_dir / "report.html", "selection_report": run_dir / "selection" / "report.html"}
    mon = monitoring or run_dir / "monitoring"
    if (mon / "index.html").is_file():
        pages["monitoring_index"] = mon / "index.html"
    return {k: p for k, p in pages.items() if p.is_file()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    ap.add_argument("--monitoring", type=Path, default=None, help="folder holding the monitoring index.html")
    ap.add_argument("--prefix", default="", help="file name prefix, e.g. tiny_")
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args(argv)
    pages = pages_of(args.run_dir, args.monitoring)
    if "run_report" not in pages:
        print(f"{args.run_dir}: no report.html (is this a run folder?)", file=sys.stderr)
        return 1
    failed = False
    with Chromium(width=args.width) as browser:
        for name, page in pages.items():
            inv = browser.inventory(page)
            bad = broken_references(inv)
            png = browser.screenshot(page, args.out / f"{args.prefix}{name}.png")
            print(f"{name}: {page} -> {png} ({len(inv['images'])} images, {len(inv['links'])} links, "
                  f"{len(inv['frames'])} frames; {len(bad)} broken)")
            for b in bad:
                print(f"  BROKEN: {b}")
            failed |= bool(bad)
    missing = {"selection_report", "monitoring_index"} - set(pages)
    for m in sorted(missing):
        print(f"{m}: not found in {args.run_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
