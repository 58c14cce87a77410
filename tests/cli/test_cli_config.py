"""`--config FILE` on the training, generation and selection commands: file values under command-line options,
unknown keys named; every command writes its resolved options into OUT/run.yaml."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.runinfo import read_run

runner = CliRunner()


def test_train_classifier_config_file_and_run_yaml(tiny_npz, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"backbone": "test_resnet", "epochs": 3, "batch_size": 16, "weight_decay": 0.01,
                                   "threads": 1, "quiet": True}))
    out = tmp_path / "m"
    r = runner.invoke(app, ["train", "classifier", "--data", str(tiny_npz), "--out", str(out), "--epochs", "1",
                            "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    stage = read_run(out)["stages"]["train classifier"]
    p = stage["params"]
    assert p["epochs"] == 1  # the command line wins over the file
    assert p["backbone"] == "test_resnet" and p["weight_decay"] == 0.01  # from the file, option or ClassifierTrainConfig field
    assert stage["data_revision"].startswith("sha256:") and "torch" in read_run(out)["packages"]
    assert yaml.safe_load((out / "config.yaml").read_text())["weight_decay"] == 0.01


def test_unknown_config_keys_are_named(tiny_npz, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("epochz: 3\n")
    for cmd in (["train", "classifier", "--data", str(tiny_npz), "--out", str(tmp_path / "a")],
                ["train", "diffusion", "--data", str(tiny_npz), "--size", "tiny", "--out", str(tmp_path / "b")],
                ["generate", "--model", str(tmp_path), "--data", str(tiny_npz), "--out", str(tmp_path / "c")],
                ["select", "--candidates", str(tmp_path), "--real", str(tiny_npz), "--classifier", str(tmp_path),
                 "--out", str(tmp_path / "d"), "--gamma", "0.5"]):
        r = runner.invoke(app, [*cmd, "--config", str(cfg)])
        assert r.exit_code == 1 and "bad.yaml: unknown key(s) epochz" in r.output, (cmd, r.output)
        assert "Traceback" not in r.output
