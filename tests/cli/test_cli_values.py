"""Out-of-range and malformed option values are refused before any work, with the option named (exit 2 for the
command line's own checks, 1 with one `error:` line for values checked by the command), and --config files get the
same checks as the options they set."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tailsynth.cli import app

runner = CliRunner()


def said(result) -> str:
    return " ".join(result.output.split())


# (command line with {d} for a data path and {o} for the output folder, the option the error must name)
BAD = [
    ("train classifier --data {d} --out {o} --batch-size 0", "--batch-size"),
    ("train classifier --data {d} --out {o} --epochs 0", "--epochs"),
    ("train classifier --data {d} --out {o} --lr 0", "--lr"),
    ("train classifier --data {d} --out {o} --synthetic-ratio 1.5", "--synthetic-ratio"),
    ("train classifier --data {d} --out {o} --seed -1", "--seed"),
    ("evaluate --model {d} --data {d} --out {o} --bootstrap -1", "--bootstrap"),
    ("experiment --data {d} --out {o} --jobs 0", "--jobs"),
    ("experiment --data {d} --out {o} --folds 1", "--folds"),
    ("experiment --data {d} --out {o} --inner-val 1", "--inner-val"),
    ("train diffusion --data {d} --size tiny --out {o} --steps 0", "--steps"),
    ("train diffusion --data {d} --size tiny --out {o} --batch-size 0", "--batch-size"),
    ("train diffusion --data {d} --size tiny --out {o} --grad-accum 0", "--grad-accum"),
    ("train diffusion --data {d} --size tiny --out {o} --ema-decay 1", "--ema-decay"),
    ("generate --model {d} --data {d} --out {o} --batch-size 0", "--batch-size"),
    ("generate --model {d} --data {d} --out {o} --strength 0", "--strength"),
    ("generate --model {d} --data {d} --out {o} --oversample 0", "--oversample"),
    ("masks {d} --out {o} --limit 0", "--limit"),
    ("select --candidates {d} --real {d} --classifier {d} --out {o} --gamma 1.5", "--gamma"),
    ("select --candidates {d} --real {d} --classifier {d} --out {o} --knn-k 0", "--knn-k"),
    ("experiment-augment --data {d} --out {o} --gamma 0", "--gamma"),
    ("export --model {d} --out {o} --max-batch-size 0", "--max-batch-size"),
    ("export --model {d} --out {o} --instances 0", "--instances"),
    ("serve --repo {d} --port 0", "--port"),
    ("serve --repo {d} --max-batch 0", "--max-batch"),
    ("predict {d} --url http://127.0.0.1:1 --batch-size 0", "--batch-size"),
    ("data split {d} --out {o}/m.csv --val 1", "--val"),
    ("data split {d} --out {o}/m.csv --kfold 1", "--kfold"),
    ("monitor reference --model {d} --data {d} --dims 0", "--dims"),
    ("synth-quality --model {d} --data {d} --classifier {d} --out {o} --gate-epochs 0", "--gate-epochs"),
]


@pytest.mark.parametrize("line, option", BAD)
def test_out_of_range_option_is_refused_naming_it(tmp_path, line, option):
    out = tmp_path / "out"
    r = runner.invoke(app, line.format(d=tmp_path / "in", o=out).split())
    assert r.exit_code == 2, r.output
    assert option in said(r) and "Traceback" not in r.output
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("line, words", [
    ("experiment --data {d} --out {o} --seeds 0,x", "--seeds '0,x': expected a comma list of integers >= 0"),
    ("experiment-augment --data {d} --out {o} --seeds -1", "--seeds '-1'"),
    ("experiment-augment --data {d} --out {o} --gammas 0.5,2", "--gammas '0.5,2'"),
    ("select --candidates {d} --real {d} --classifier {d} --out {o} --clean-band 2,1", "--clean-band '2,1'"),
    ("diagnose-diffusion --model {d} --data {d} --out {o} --classifier {d} --sweep ddim:x:2", "--sweep item"),
])
def test_malformed_list_option_is_one_clear_error(tmp_path, line, words):
    out = tmp_path / "out"
    r = runner.invoke(app, line.format(d=tmp_path / "in", o=out).split())
    assert r.exit_code == 1, r.output
    assert words in said(r) and "Traceback" not in r.output
    assert not out.exists()


@pytest.mark.parametrize("text, words", [
    ("batch_size: 0\n", "batch_size"),
    ("epochs: abc\n", "epochs"),
    ("lr: -1\n", "lr"),
    ("epochs: true\n", "epochs: expected a number"),
])
def test_config_file_values_get_the_options_checks(tmp_path, tiny_npz, text, words):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    r = runner.invoke(app, ["train", "classifier", "--data", str(tiny_npz), "--out", str(tmp_path / "m"),
                            "--config", str(cfg)])
    assert r.exit_code == 1, r.output
    assert f"{cfg}: {words}" in said(r) and "Traceback" not in r.output
    assert not (tmp_path / "m").exists()
