"""`pipeline run --local --set` values are checked against the profile's parameter types, ranges and choices before
anything runs, and a run folder is never left saying `running` for a run that did not start; one writer per run
folder, and a finished run folder is kept unless --overwrite (or resumed with --cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tailsynth
from pipelines.profiles import PROFILES, check_parameter, profile
from tailsynth.cli import app
from tailsynth.errors import ConfigError, DataError
from tailsynth.runinfo import read_run, record_stage

runner = CliRunner()
SRC = Path(tailsynth.__file__).resolve().parents[1]


def said(result) -> str:
    return " ".join(result.output.split())


def _run(data: Path, out: Path, *extra: str):
    return runner.invoke(app, ["pipeline", "run", "--local", "--profile", "tiny", "--data", str(data),
                               "--out", str(out), *extra])


@pytest.mark.parametrize("setting, words", [
    ("epochs=abc", "epochs must be an integer >= 1, got 'abc'"),
    ("epochs=0", "epochs must be an integer >= 1, got 0"),
    ("epochs=1.5", "epochs must be an integer >= 1, got 1.5"),
    ("batch_size=-3", "batch_size must be an integer >= 1"),
    ("gamma=0", "gamma must be a number in (0, 1], got 0"),
    ("loss=hinge", "loss must be one of 'ce'"),
    ("classes={a: 1}", "classes must be a list of names"),
    ("synthetic_dose=replay", "synthetic_dose must be one of 'replace', 'add'"),
    ("clean_confidence=1", "clean_confidence must be a number in [0, 1)"),
])
def test_bad_set_value_is_one_clear_error_and_nothing_is_written(tmp_path, tiny_npz, setting, words):
    out = tmp_path / "run"
    r = _run(tiny_npz, out, "--set", setting)
    assert r.exit_code == 1
    assert words in said(r) and "--set" in said(r) and "Traceback" not in r.output
    assert not out.exists()  # checked before the run folder (and its run.yaml) is touched


def test_unknown_set_key_names_it_and_the_known_ones(tmp_path, tiny_npz):
    r = _run(tiny_npz, tmp_path / "run", "--set", "epochz=3")
    assert r.exit_code == 1
    assert "unknown parameter(s) epochz" in said(r) and "epochs" in said(r)
    assert not (tmp_path / "run").exists()


def test_set_values_take_the_parameter_type():
    assert check_parameter("guidance", 3) == 3.0 and isinstance(check_parameter("guidance", 3), float)
    assert check_parameter("classes", "DF,VASC") == ["DF", "VASC"]
    assert check_parameter("diffusion_model", None) == ""  # `--set diffusion_model=`: train one in the run
    assert profile("tiny", epochs=2, precision="auto")["epochs"] == 2
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        profile("tiny", seed=-1)
    with pytest.raises(ConfigError, match="val_fraction"):
        profile("cpu", val_fraction=1.0)


def test_every_profile_passes_its_own_checks():
    for name, params in PROFILES.items():
        assert profile(name, **params)["profile"] == name


def test_ham_profile_is_accepted_by_the_cli(tmp_path):
    r = runner.invoke(app, ["pipeline", "run", "--local", "--profile", "ham", "--data", str(tmp_path / "none"),
                            "--out", str(tmp_path / "o")])
    assert "--profile" not in said(r)  # refused for its data, not for its name
    assert r.exit_code == 1 and "no real data found" in said(r)


def test_finished_run_folder_is_kept_unless_overwrite(tmp_path, tiny_npz):
    out = tmp_path / "run"
    record_stage(out, "pipeline train_augment", {"epochs": 1}, status="succeeded")
    before = (out / "run.yaml").read_text()
    r = _run(tiny_npz, out)
    assert r.exit_code == 1
    assert "already holds a finished run" in said(r) and "--overwrite" in said(r) and "--cache" in said(r)
    assert (out / "run.yaml").read_text() == before


def test_busy_run_folder_names_the_holder(tmp_path, tiny_npz):
    out = tmp_path / "run"
    hold = ("import sys, time\nfrom tailsynth.outdir import claim\n"
            "with claim(sys.argv[1], 'x'):\n    print('held', flush=True)\n    time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        r = _run(tiny_npz, out)
        assert r.exit_code == 1 and f"pid {proc.pid}" in said(r) and str(out) in said(r)
        assert not (out / "run.yaml").exists()
    finally:
        proc.kill()
        proc.wait(10)


def test_a_run_that_fails_after_starting_is_recorded_as_failed(tmp_path):
    """Data that resolves and hashes but that the first task cannot read: run.yaml says failed, not running."""
    data = tmp_path / "dermamnist.npz"
    data.write_bytes(b"not an npz archive")
    out = tmp_path / "run"
    r = _run(data, out)
    assert r.exit_code == 1, r.output
    stage = read_run(out)["stages"]["pipeline train_augment"]
    assert stage["status"] == "failed" and stage["error"]


def test_a_profile_cannot_train_a_useless_synthesizer_by_accident():
    from pipelines.profiles import MIN_SCRATCH_STEPS, profile

    assert profile("ham")["diffusion_model"] == "models/synth-ham64"  # the shipped one, checked by hash at run time
    with pytest.raises(ConfigError, match=r"profile 'ham': trains its synthesizer from scratch .*diffusion_steps >= "):
        profile("ham", diffusion_model="", diffusion_steps=1000)
    with pytest.raises(ConfigError, match="diffusion_max_minutes=0"):
        profile("cpu", diffusion_model="", diffusion_max_minutes=3.0)
    assert profile("cpu", diffusion_model="", diffusion_steps=MIN_SCRATCH_STEPS)["diffusion_steps"] == MIN_SCRATCH_STEPS
    assert profile("tiny")["diffusion_steps"] < MIN_SCRATCH_STEPS  # the plumbing test may
    assert profile("paper")["diffusion_model"] == ""  # 50,000 uncapped steps on a GPU pool


def test_gate_and_floor_parameters_are_checked():
    from pipelines.profiles import profile

    assert profile("cpu")["synth_gate"] == "warn" and profile("cpu")["floor_quantile"] == 0.95
    with pytest.raises(ConfigError, match="synth_gate must be one of 'warn', 'require', 'off'"):
        profile("cpu", synth_gate="sometimes")
    with pytest.raises(ConfigError, match="floor_quantile must be a number in"):
        profile("cpu", floor_quantile=1.5)
    assert profile("cpu", floor_quantile=0)["floor_quantile"] == 0.0  # 0: no floor


def test_serve_evidence_resolves_to_the_experiments_results_record(tmp_path):
    """The `ham` profile names the decisive experiment's folder; the run gets its results record as an absolute
    path, checked before any task starts, and a folder without one is refused by name."""
    from pipelines.local import local_parameters
    from tailsynth.evaluation.promotion import experiment_verdict

    evidence = Path(local_parameters("ham", dvc_remote="unused")["serve_evidence"])
    assert evidence.is_absolute() and evidence.is_file()
    experiment_verdict(evidence)  # a results record the export rule can read (no verdict for (e) is fine)
    with pytest.raises(DataError, match=r"serve_evidence .*empty: no experiment results there"):
        local_parameters("ham", dvc_remote="unused", serve_evidence=str(tmp_path / "empty"))


def test_synthetic_recipe_fits_together():
    """The experiment's recipe as profile parameters: the cleaning rule, the additive dose and the weight."""
    p = profile("cpu", clean_confidence=0.8, synthetic_dose="add", synthetic_ratio=0.25, synthetic_weight=0.3)
    assert (p["clean_confidence"], p["synthetic_dose"], p["synthetic_weight"]) == (0.8, "add", 0.3)
    with pytest.raises(ConfigError, match="clean_confidence=0.8 and calibrate=0.9 are two selection rules"):
        profile("cpu", clean_confidence=0.8, calibrate=0.9)
    with pytest.raises(ConfigError, match=r"synthetic_dose='add' needs synthetic_ratio in \(0, 1\)"):
        profile("cpu", synthetic_dose="add")
