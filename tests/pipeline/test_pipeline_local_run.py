"""Through KFP's local SubprocessRunner: one component alone, and the tiny profile end to end."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.runinfo import read_run

ROOT = Path(__file__).resolve().parents[2]
SHARED_NPZ = ROOT.parent / "shared" / "data" / "dermamnist" / "dermamnist.npz"
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


def test_validate_component_through_local_runner(tmp_path, tiny_npz):
    from kfp import local

    from components import validate

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = validate(source=str(tiny_npz), data_revision="rev-x", max_per_class=2, seed=0)
    staged = Path(task.outputs["data"].path) / "tiny.npz"
    assert np.bincount(np.load(staged)["val_labels"].reshape(-1)).max() <= 2
    assert task.outputs["data"].metadata["data_revision"] == "rev-x"
    out = task.outputs["Output"]  # the one data revision: "sha256:" + the hex digest of the staged bytes
    assert out.startswith("sha256:") and len(out) == 7 + 64


# A task's line on the run's terminal: "  select (real+synthetic)            6.8 s".
TASK_LINE = re.compile(r"  (?P<task>\S.*?) +(?P<seconds>\d+\.\d) s")


def terminal_shows_tasks_not_the_runner(output: str, out: Path) -> None:
    """A local run's terminal: the log's path, a line per task with its arm, the trainings' progress, no executor
    JSON (that is in OUT/logs/pipeline.log), and under 200 lines."""
    lines = output.splitlines()
    log = out / "logs" / "pipeline.log"
    assert str(log) in lines[0] and "Got executor_input" in log.read_text()
    assert "executor_input" not in output and '"outputFile"' not in output and "KFP Executor" not in output
    tasks = [TASK_LINE.fullmatch(x)["task"] for x in lines if TASK_LINE.fullmatch(x)]
    assert len(tasks) == len(set(tasks))
    assert {"validate", "select (real+synthetic)", "generate (real+harmonized) [shard 1]"} <= set(tasks)
    assert any(x.startswith("  train-prior-shift-control | train classifier (resnet18): ") for x in lines)
    assert len(lines) < 200


def test_a_failed_stage_shows_its_last_lines_and_the_log(tmp_path, tiny_npz):
    """Through the CLI: a source that cannot be read fails the first task; the terminal shows that task's
    traceback tail, and the error line names the log holding the runner's whole output."""
    broken = tmp_path / "broken.npz"
    broken.write_bytes(tiny_npz.read_bytes()[:200])
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["pipeline", "run", "--local", "--profile", "tiny", "--data", str(broken),
                                 "--out", str(out), "--set", f"dvc_remote={tmp_path / 'store'}"])
    assert r.exit_code == 1, r.output[-3000:]
    lines = r.output.splitlines()
    failed = next(i for i, x in enumerate(lines) if x.startswith("  validate ") and "FAILED after" in x)
    tail = [x.removeprefix("    | ") for x in lines[failed + 1:] if x.startswith("    | ")]
    assert "Traceback (most recent call last):" in tail and any("stage_source" in x for x in tail)
    log = out / "logs" / "pipeline.log"
    assert f"  the local runner's full output: {log}" in lines
    said = " ".join(r.output.split())
    assert "error: pipeline run failed" in said and "Inner task failed: 'validate'" in said and str(log) in said
    assert "\x1b[" not in r.output  # the runner's colours stay in its log
    assert "Got executor_input" in log.read_text() and "executor_input" not in r.output


def test_tiny_profile_end_to_end(tmp_path, monkeypatch):
    """The whole train_augment pipeline on a few hundred real DermaMNIST images (tiny data when absent), trained on
    half of the train split (train_fraction, the scaling benchmark's parameter)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if SHARED_NPZ.is_file():
        data = SHARED_NPZ
    else:
        import sys

        sys.path.insert(0, str(ROOT / "tests"))
        from tailsynth_testdata import make_npz

        data = make_npz(tmp_path / "dermamnist.npz", {"train": [30, 30, 30, 20, 30, 60, 20],
                                                      "val": [8, 8, 8, 6, 8, 12, 6]})
    out = tmp_path / "run"
    store = tmp_path / "dvc-store"  # stands in for the checkout's default remote beside it
    r = CliRunner().invoke(app, ["pipeline", "run", "--local", "--profile", "tiny", "--data", str(data),
                                 "--out", str(out), "--set", f"dvc_remote={store}", "--set", "train_fraction=0.5",
                                 # the decisive experiment's recipe: cleaning rule, additive dose, weight
                                 "--set", "clean_confidence=0.5", "--set", "synthetic_dose=add",
                                 "--set", "synthetic_ratio=0.25", "--set", "synthetic_weight=0.5"])
    assert r.exit_code == 0, r.output[-3000:]
    assert f"report: {out / 'report.md'}" in r.output.splitlines()  # not indented by the runner's print
    terminal_shows_tasks_not_the_runner(r.output, out)
    rows = list(csv.DictReader(Path(out / "comparison.csv").read_text().splitlines()))
    assert [row["method"] for row in rows] == ["real-only", "prior-shift control", "real+synthetic", "real+harmonized"]
    assert list(rows[0]) == ["method", "balanced_accuracy"] + [f"recall_{c}" for c in CLASSES]
    for row in rows:
        assert 0.0 <= float(row["balanced_accuracy"]) <= 1.0
        # balanced accuracy is the mean of the per-class recalls
        recalls = [float(row[f"recall_{c}"]) for c in CLASSES]
        assert float(row["balanced_accuracy"]) == pytest.approx(np.mean(recalls), abs=1e-3)
    md = (out / "report.md").read_text()
    assert "## Selection statistics" in md and "| DF | 4 |" in md  # 2 shards x fixed count 4 per class, merged
    stage = read_run(out)["stages"]["pipeline train_augment"]
    config = stage["params"]
    assert config["data_revision"].startswith("sha256:") and config["profile"] == "tiny"
    assert stage["status"] == "succeeded" and stage["wall_seconds"] > 0
    # Per-task times (finish minus previous finish), in run.yaml and in the report's stage timing table.
    tasks = {t["stage"]: t["seconds"] for t in stage["task_seconds"]}
    # The terminal has one line per task of run.yaml's rows, each with its seconds.
    assert sorted(TASK_LINE.fullmatch(x)["task"] for x in r.output.splitlines() if TASK_LINE.fullmatch(x)) == \
        sorted(t["stage"] for t in stage["task_seconds"])
    # Rows carry the task's display name and its arm, not the runner's folder names (evaluate-2-2, ...).
    assert {"validate", "train-classifier", "train-prior-shift-control", "evaluate-control", "report",
            "select (real+synthetic)", "select (real+harmonized)", "generate (real+harmonized) [shard 1]"} <= set(tasks)
    assert all(v >= 0 for v in tasks.values()) and sum(tasks.values()) <= stage["wall_seconds"] + 1
    assert "Stage timings" in md and "train-classifier" in md.split("Stage timings", 1)[1]
    assert (out / "report.html").read_text().count("<table>") >= 3
    run_dir = next((out / "artifacts").glob("tailsynth-train-augment-*"))
    shards = sorted(run_dir.glob("for-loop-*/generate/candidates/synthetic_ground_truth.csv"))
    assert len(shards) == 2  # one generation task per shard
    # Arm (f): the same sub-pipeline again, with the harmonize mode, its kept images shown in the report.
    modes = {m: {r["mode"] for r in csv.DictReader((run_dir / m / "candidates" / "manifest.csv").open())}
             for m in ("merge", "merge-2")}
    assert modes == {"merge": {"inpaint"}, "merge-2": {"harmonize"}}
    assert "## Harmonized tail samples" in md
    exported = list(run_dir.glob("export*/exported/*/1/model.onnx"))
    assert len(exported) == 1  # exactly one branch of the If/Else ran
    assert "## Served model" in md and "(single split rule)" in md  # which arm, and why
    record = json.loads((run_dir / "version" / "record").read_text())
    assert record["sets"]["real"]["data_revision"] == config["data_revision"]
    # The recipe reached the stages: both arms selected by the cleaning rule, trained with the additive dose and
    # the weight; the control replays the same extra tail draws as real images.
    for sel in ("select", "select-2"):
        rule = json.loads((run_dir / sel / "selected" / "quality.json").read_text())["selection"]
        assert rule["rule"] == "clean" and rule["cleaning"]["confidence"] == 0.5 and rule["gamma"] is None
    configs = {p.parent.parent.name: yaml.safe_load(p.read_text())
               for p in run_dir.glob("train-classifier-augmented*/model/config.yaml")}
    assert len(configs) == 3, sorted(configs)
    doses = sorted((c["synthetic_dose"], c["synthetic_ratio"], c["synthetic_weight"]) for c in configs.values())
    assert doses == [("add", 0.25, 0.5), ("add", 0.25, 0.5), ("replay", 0.25, 0.5)]
    # train_fraction reached the split: half of each class's staged train images (at least 5), val untouched.
    assert config["train_fraction"] == 0.5
    staged = np.load(next(run_dir.glob("validate/data/*.npz")))
    manifest = list(csv.DictReader((run_dir / "split" / "splits").read_text().splitlines()))
    for split_name in ("train", "val"):
        staged_counts = np.bincount(staged[f"{split_name}_labels"].reshape(-1), minlength=7)
        got = sum(r["split"] == split_name for r in manifest)
        want = staged_counts.sum() if split_name == "val" else sum(min(n, max(5, round(n / 2))) for n in staged_counts)
        assert got == want, (split_name, got, want)

    # DVC: both sets pushed, both revisions in run.yaml, the synthetic set restorable byte-identical.
    import filecmp

    from tailsynth.data.versioning import dvc_md5, pull_run

    sets = read_run(out)["stages"]["version"]["dvc"]["sets"]
    selected = next(run_dir.glob("select/selected"))
    assert sets["synthetic"]["md5"] == dvc_md5(selected) and sets["synthetic"]["pushed"]
    assert sets["real"]["md5"] == dvc_md5(next(run_dir.glob("validate/data"))) and sets["real"]["pushed"]
    assert (out / "dvc" / "synthetic.dvc").is_file() and (out / "dvc" / "real.dvc").is_file()
    pull_run(out, tmp_path / "restored")
    files = sorted(p.relative_to(selected) for p in selected.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "restored") for p in (tmp_path / "restored").rglob("*")
                           if p.is_file())
    assert all(filecmp.cmp(selected / f, tmp_path / "restored" / f, shallow=False) for f in files)
    # The report names both revisions and links the exported model card, whose lineage matches run.yaml.
    card = json.loads((out / "model" / "model_card.json").read_text())
    if card["lineage"]["synthetic_set"]:
        assert card["lineage"]["synthetic_set"]["dvc_md5"] == sets["synthetic"]["md5"]
    assert card["lineage"]["training_data"]["revision"] == sets["real"]["content_revision"]
    page = (out / "report.html").read_text()
    assert sets["synthetic"]["md5"] in page and card["version"] in page
    assert "href='model/model_card.html'" in page and "href='selection/report.html'" in page


def test_a_useless_synthesizer_is_stopped_by_the_gate_and_the_run_finishes_real_only(tmp_path, monkeypatch):
    """The tiny profile trains its synthesizer for 4 steps: on data whose classes a 1-epoch classifier separates
    (each class its own colour), its probe fails the gate for both classes in both modes. Nothing is generated or
    kept, the synthetic arms train on real images only, the real-only model is served, and the terminal and the
    report name the class, the gate and its figures."""
    import sys

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    from tailsynth_testdata import make_npz

    data = make_npz(tmp_path / "colours.npz", {"train": [30, 30, 30, 20, 30, 60, 20], "val": [8, 8, 8, 6, 8, 12, 6]})
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["pipeline", "run", "--local", "--profile", "tiny", "--data", str(data),
                                 "--out", str(out), "--set", f"dvc_remote={tmp_path / 'store'}"])
    assert r.exit_code == 0, r.output[-3000:]
    gate_lines = [x for x in r.output.splitlines() if "| synthesizer gate (" in x]
    for mode in ("inpaint", "harmonize"):
        for cls in ("DF", "VASC"):
            line = next(x for x in gate_lines if f"gate ({mode}): {cls} fails" in x)
            assert "in-distribution" in line and "probe images" in line and f"{cls} trains on real images only" in line
    run_dir = next((out / "artifacts").glob("tailsynth-train-augment-*"))
    for sel in ("select", "select-2"):
        assert json.loads((run_dir / sel / "selected" / "quality.json").read_text())["overall"]["n_kept"] == 0
    cards = list(run_dir.glob("export*/exported/*/model_card.json"))
    assert len(cards) == 1  # one branch of the export rule ran: the real-only model's, with no synthetic set
    assert json.loads(cards[0].read_text())["lineage"]["synthetic_set"] is None
    rows = list(csv.DictReader(Path(out / "comparison.csv").read_text().splitlines()))
    assert [row["method"] for row in rows] == ["real-only", "prior-shift control", "real+synthetic", "real+harmonized"]
    md = (out / "report.md").read_text()
    section = md.split("## Synthetic candidates: gate, floor and selection", 1)[1]
    assert "| main synthetic arm | DF | FAIL: " in section and "in-distribution" in section
    assert "synthesizer gate (inpaint): VASC fails" in section and "No synthetic image was kept." in md
    served = md.split("## Served model", 1)[1]
    assert served.lstrip().startswith("**real-only** is exported") and "kept no synthetic image" in served
