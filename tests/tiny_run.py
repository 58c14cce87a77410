"""A tiny run folder laid out like a pipeline run, built with the real library calls the stages make (seconds,
not minutes): diffusion model -> candidates -> OOD selection (with its report) -> baseline and augmented
classifiers -> evaluations with bootstrap intervals -> export -> DVC versioning -> run report; optionally a
monitoring window (Evidently pages and the index) scored with the exported model's classifier."""

from __future__ import annotations

from pathlib import Path

from tailsynth_testdata import make_npz


def build_tiny_run(runs: Path, monitoring: bool = False) -> dict:
    import torch

    from tailsynth.classify.evaluate import evaluate_model
    from tailsynth.classify.model import feature_model
    from tailsynth.classify.train import train_classifier
    from tailsynth.data.versioning import record_run_versions, version_run
    from tailsynth.diffusion.generate import generate
    from tailsynth.diffusion.model import model_hash
    from tailsynth.diffusion.train import train_diffusion
    from tailsynth.export import export_model
    from tailsynth.ood.select import select_candidates
    from tailsynth.pipeline_io import localize_manifest, write_json
    from tailsynth.pipeline_report import (
        VERSION_RECORD,
        build_run_report,
        comparison_rows,
        finalize_run_report,
        write_comparison_csv,
    )

    torch.set_num_threads(1)
    run = runs / "run-1"
    art = run / "artifacts"
    data_dir = art / "validate" / "data"
    data_dir.mkdir(parents=True)
    npz = make_npz(data_dir / "tiny.npz", {"train": [8, 8, 8, 6, 8, 24, 6], "val": [3, 3, 3, 3, 3, 6, 3]})
    diff = art / "train-diffusion" / "model"
    train_diffusion(npz, "tiny", diff, resolution=16, steps=2, batch_size=4)
    cand = art / "merge" / "candidates"
    generate(diff, npz, cand, classes=["DF", "VASC"], policy="fixed", count=3, sampler="ddim", steps=2, guidance=1.5)
    base = art / "train-classifier" / "model"
    common = {"backbone": "resnet18", "epochs": 1, "resolution": 28, "batch_size": 32, "seed": 0, "quiet": True}
    train_classifier(str(npz), base, **common)
    sel = art / "select" / "selected"
    # A 2-step synthesizer paints noise, which the floor (rightly) rejects; this fixture tests the plumbing of kept
    # images through training, versioning and the report, so it selects without the floor (tests/ood test the floor).
    select_candidates(cand, str(npz), feature_model(base), sel, gamma=0.67, floor=None)
    localize_manifest(sel)
    aug = art / "train-classifier-augmented" / "model"
    train_classifier(str(npz), aug, synthetic_manifest=str(sel / "selected_manifest.csv"), **common)
    evals = []
    for arm, model in (("real-only", base), ("real+synthetic", aug)):
        ev = art / f"evaluate-{arm}" / "evaluation"
        res = evaluate_model(model, str(npz), "val", ev, bootstrap=50, plots=False)
        write_json(ev / "evaluation.json", {**res, "arm": arm, "split": "val"})
        evals.append(ev)
    cmp_csv = art / "compare" / "comparison"
    write_comparison_csv(comparison_rows(evals), cmp_csv)
    repo = art / "export" / "exported"
    export_model(aug, repo, target="local")
    store = runs / "dvc-store"
    record = version_run(data_dir, sel, str(store), data_revision="sha256:param", candidates=cand,
                         synthesizer=diff, synthesizer_hash=model_hash(diff))
    rec_path = art / "version" / "record"
    write_json(rec_path, record)
    report = art / "report" / "report"
    build_run_report(report, cmp_csv, evals, candidates=cand, selected=sel, version_record=rec_path,
                 data_revision="sha256:param", profile="tiny", diffusion_model=diff)
    for f in report.iterdir():  # what pipelines/local.py does with the report stage's folder
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    import shutil

    shutil.copytree(report / "selection", run / "selection")
    record_run_versions(run, record)
    out = {"runs": runs, "run": run, "npz": npz, "diffusion": diff, "candidates": cand, "selected": sel,
           "baseline": base, "augmented": aug, "repo": repo, "store": store, "version_record": run / VERSION_RECORD}
    if monitoring:
        from tailsynth.monitor.reference import build_reference
        from tailsynth.monitor.report import build_window_report as monitor_report
        from tailsynth.monitor.score import score_dataset

        ref = build_reference(aug, str(npz), split="train")
        log = run / "monitoring" / "predictions.jsonl"
        score_dataset(aug, str(npz), split="val", out=log)
        monitor_report(log, ref["reference"], run / "monitoring" / "window-1")
        out["monitoring"] = run / "monitoring"
    finalize_run_report(run, timings={"validate": 1.0, "train-diffusion": 2.0, "generate": 1.5, "select": 0.8})
    return out
