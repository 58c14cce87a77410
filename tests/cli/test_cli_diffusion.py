import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from tailsynth.cli import app

runner = CliRunner()


def test_cli_masks_train_generate_merge(tiny_isic, tmp_path):
    r = runner.invoke(app, ["masks", str(tiny_isic), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["n"] == 45
    assert (tmp_path / "m" / "masks.csv").is_file()

    model = tmp_path / "model"
    r = runner.invoke(app, ["train", "diffusion", "--data", str(tiny_isic), "--size", "tiny", "--resolution", "16",
                            "--steps", "2", "--batch-size", "2", "--masks", str(tmp_path / "m"), "--out", str(model)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 2
    assert (model / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    common = ["--model", str(model), "--data", str(tiny_isic), "--classes", "DF,VASC", "--policy", "fixed",
              "--count", "2", "--steps", "2", "--batch-size", "2", "--sampler", "dpmsolver", "--seed", "1"]
    r = runner.invoke(app, ["generate", *common, "--save-inputs", "--out", str(tmp_path / "full")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(Path(tmp_path / "full" / "manifest.csv").read_text().splitlines()))
    assert len(rows) == 4 and "mask_path" in rows[0] and rows[0]["sampler"] == "dpmsolver"
    for i in (1, 2):
        r = runner.invoke(app, ["generate", *common, "--save-inputs", "--shard", f"{i}/2",
                                "--out", str(tmp_path / f"s{i}")])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["merge-shards", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "mg")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mg" / "manifest.csv").read_bytes() == (tmp_path / "full" / "manifest.csv").read_bytes()


def test_cli_errors_are_one_line(tmp_path):
    r = runner.invoke(app, ["generate", "--model", str(tmp_path), "--data", str(tmp_path / "nope.npz"),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert "tailsynth_diffusion.json" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["masks", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "not found" in r.output
