"""CLI smoke on tiny data: train classifier -> evaluate -> experiment, through the real `tailsynth` app."""

import json

from typer.testing import CliRunner

from tailsynth.cli import app

runner = CliRunner()


def test_train_evaluate_experiment(tiny_npz, tmp_path):
    model = tmp_path / "model"
    r = runner.invoke(app, ["train", "classifier", "--data", str(tiny_npz), "--backbone", "test_resnet",
                            "--loss", "cb-ce", "--epochs", "1", "--seed", "1", "--out", str(model),
                            "--batch-size", "16", "--threads", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (model / "model.pt").is_file() and (model / "metrics.json").is_file()
    assert json.loads(r.stdout.strip().splitlines()[-1])["out"] == str(model)

    ev = tmp_path / "eval"
    r = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(tiny_npz), "--split", "val",
                            "--out", str(ev), "--bootstrap", "50", "--posthoc-tau", "1.0"])
    assert r.exit_code == 0, r.output
    m = json.loads((ev / "metrics.json").read_text())
    for k in ("balanced_accuracy", "accuracy", "macro_auc", "ece", "per_class", "ci95"):
        assert k in m
    assert m["posthoc_tau"] == 1.0
    assert set(m["per_class"]["VASC"]) >= {"recall", "precision", "f1", "auc", "support"}
    for f in ("per_class.csv", "metrics.md", "confusion_matrix.png", "per_class_recall.png"):
        assert (ev / f).is_file(), f
    assert (ev / "per_class.csv").read_text().splitlines()[0] == "class,support,recall,precision,f1,auc"

    ex = tmp_path / "exp"
    r = runner.invoke(app, ["experiment", "--data", str(tiny_npz), "--out", str(ex), "--methods",
                            "ce+posthoc", "--seeds", "0,1", "--backbone", "test_resnet", "--epochs", "1",
                            "--threads", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    table = (ex / "comparison.md").read_text()
    assert "| ce+posthoc | 2 |" in table and "| ce |" not in table  # the base is trained, not listed
    assert "Rarest class: **DF**" in table  # DF and VASC tie at 1 val image; DF comes first in ISIC order
    assert len((ex / "comparison_runs.csv").read_text().splitlines()) == 1 + 2
    assert (ex / "runs" / "ce" / "seed1" / "model.pt").is_file()  # the post-hoc base was trained


def test_cli_errors_are_one_clear_line(tiny_npz, tmp_path):
    r = runner.invoke(app, ["train", "classifier", "--data", str(tiny_npz), "--backbone", "test_resnet",
                            "--loss", "hinge", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1
    assert "unknown loss 'hinge'" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "nomodel"), "--data", str(tiny_npz),
                            "--out", str(tmp_path / "e")])
    assert r.exit_code == 1 and "no classifier checkpoint" in r.output
