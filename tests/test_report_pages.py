"""Every HTML page of a run (run report, OOD selection report, model card, monitoring index, window pages and
their Evidently pages) opened in headless Chromium: every image decodes and every link/frame resolves; and the
run report says what a reviewer needs (intervals, lineage, links, timings)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tools.browser import Chromium, broken_references, find_chromium, local_pages


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def chromium() -> str:
    """The browser's binary. Missing, it skips the test on a developer's machine and fails it in CI, where
    .ci/run installs it: a skipped page check there would pass a broken report page unnoticed."""
    binary = find_chromium()
    if binary is None:
        if running_in_ci():
            pytest.fail("Chromium is not installed and CI is set: .ci/run installs it from the Debian packages "
                        "(apt-get install -y chromium); the report pages must be checked in a browser in CI")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    return binary


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tiny_run import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("runs"), monitoring=True)


def test_run_report_content(tiny_run):
    run = tiny_run["run"]
    page = (run / "report.html").read_text()
    ev = [json.loads(p.read_text()) for p in sorted(run.glob("artifacts/evaluate-*/evaluation/evaluation.json"))]
    # each arm's balanced accuracy with its bootstrap interval, as computed by the evaluation
    for e in ev:
        lo, hi = e["ci95"]["balanced_accuracy"]
        assert f"{e['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]" in page
        df_lo, df_hi = e["ci95"]["per_class_recall"]["DF"]
        assert f"[{df_lo:.3f}, {df_hi:.3f}]" in page
    card = json.loads((run / "model" / "model_card.json").read_text())
    syn = card["lineage"]["synthetic_set"]
    for needle in ("95% bootstrap interval", "Lineage of the exported model", card["version"], syn["dvc_md5"],
                   card["lineage"]["synthesizer"]["hash"], "Stage timings", "train-diffusion",
                   "href='selection/report.html'", "href='model/model_card.html'",
                   "href='monitoring/index.html'", "href='monitoring/window-1/evidently/overall.html'"):
        assert needle in page, needle
    assert "Lineage" in (run / "model" / "model_card.md").read_text()
    # How the candidates were sampled, precision included (bf16 and fp32 images differ by a few levels).
    gen = json.loads(next(run.glob("artifacts/**/candidates/generation.json")).read_text())
    assert "sampling in this run" in page and f"{gen['runtime']} / {gen['precision']}" in page


def test_recall_plot_legend_covers_no_bar():
    """NV recall at 1.0 (the head class) is where an in-axes legend used to sit: no bar or error bar may share
    pixels with the legend."""
    import matplotlib.pyplot as plt

    from tailsynth.pipeline_report import recall_figure

    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
    rows = [{"method": m, "balanced_accuracy": 0.6, **{f"recall_{c}": (1.0 if c == "NV" else 0.5) for c in classes}}
            for m in ("real-only", "real+synthetic")]
    ivs = [{f"recall_{c}": [0.4, 1.0] for c in classes} | {"balanced_accuracy": [0.5, 0.7]} for _ in rows]
    fig = recall_figure(rows, ivs)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    artists = list(ax.patches) + [ln for ln in ax.lines] + [c for c in ax.collections]
    assert len(ax.patches) == 2 * len(classes)
    import numpy as np

    for a in artists:
        box = a.get_window_extent()
        if not np.isfinite(box.extents).all():  # an artist that draws nothing
            continue
        assert not legend.overlaps(box), f"legend {legend} covers {a} at {box}"
    assert legend.y1 < ax.get_window_extent().y0  # below the axes altogether
    plt.close(fig)


def test_every_page_renders_with_its_images_and_links(tiny_run):
    binary = chromium()
    run = tiny_run["run"]
    start = [run / "report.html", run / "selection" / "report.html", run / "model" / "model_card.html",
             run / "monitoring" / "index.html"]
    seen, todo, report, evidently = set(), list(start), {}, set()
    with Chromium(binary, timeout=180) as browser:
        while todo:
            page = todo.pop().resolve()
            if page in seen:
                continue
            seen.add(page)
            assert page.is_file(), page
            inv = browser.inventory(page)
            report[str(page.relative_to(run.resolve()))] = inv
            assert not broken_references(inv), (page, broken_references(inv))
            # Evidently's own pages (several MB of plotly each) are checked to exist, and rendered by the slow test.
            todo += [p for p in local_pages(inv) if p.resolve().is_relative_to(run.resolve())
                     and "evidently" not in p.parts]
            evidently |= {p.resolve() for p in local_pages(inv) if "evidently" in p.parts}
        shot = browser.screenshot(run / "report.html", run / "shot.png")
    assert shot.stat().st_size > 10_000
    run_inv = report["report.html"]
    assert len(run_inv["images"]) >= 3 and all(i["ok"] for i in run_inv["images"])  # plot, kept and dropped grids
    assert report["selection/report.html"]["images"]  # histograms and grids of the selection
    assert evidently and all(p.is_file() for p in evidently)  # the Evidently pages linked from the monitoring pages


@pytest.mark.slow
def test_evidently_pages_render_offline(tiny_run):
    """Evidently's pages inline their scripts: they render with no network, and only Plotly's logo links leave."""
    binary = chromium()
    pages = sorted(tiny_run["run"].glob("monitoring/*/evidently/*.html"))
    assert pages
    with Chromium(binary, timeout=300) as browser:
        for page in pages:
            inv = browser.inventory(page)
            bad = broken_references(inv, external_links_ok=True)
            assert not bad, (page, bad)
            assert not inv["assets"] or all(a.startswith("file:") for a in inv["assets"])


def test_finalize_ignores_older_runs_cards_of_an_old_schema(tiny_run):
    """A re-run into the same folder keeps the earlier runs' artifacts, whose classifier cards may predate the card
    schema (found by `make run` after the schema change): the report takes this run's card, the newest."""
    import json
    import os

    from tailsynth.pipeline_report import finalize_run_report

    run = tiny_run["run"]
    for name, card in (("no-kind", {"name": "lesion-classifier", "version": "0123456789ab"}),
                       ("old-schema", {"kind": "classifier", "version": "0123456789ab"})):
        old = run / "artifacts" / f"earlier-run-{name}" / "export" / "exported" / "lesion-classifier" / "model_card.json"
        old.parent.mkdir(parents=True)
        old.write_text(json.dumps(card))
        os.utime(old, (1_000_000_000, 1_000_000_000))
    try:
        finalize_run_report(run)
        shown = json.loads((run / "model" / "model_card.json").read_text())
        assert shown["schema"] == "tailsynth-model-card/1" and shown["kind"] == "classifier"
        assert "model/model_card.html" in (run / "report.html").read_text()
    finally:
        import shutil

        for name in ("no-kind", "old-schema"):
            shutil.rmtree(run / "artifacts" / f"earlier-run-{name}")
