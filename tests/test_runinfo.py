import yaml


def test_stages_merge_into_one_run_file(tmp_path):
    from tailsynth.runinfo import read_run, record_stage

    record_stage(tmp_path, "train", {"epochs": 3, "out": tmp_path / "x"}, data_revision="abc123")
    p = record_stage(tmp_path, "generate", {"classes": ("DF", "VASC")}, model_hash="deadbeef")
    record_stage(tmp_path, "train", {"epochs": 4})
    run = yaml.safe_load(p.read_text())
    assert run == read_run(tmp_path)
    assert run["stages"]["train"]["params"] == {"epochs": 4}
    assert "data_revision" not in run["stages"]["train"]  # replaced as a whole
    assert run["stages"]["generate"]["params"]["classes"] == ["DF", "VASC"]
    assert run["stages"]["generate"]["model_hash"] == "deadbeef"
    assert run["packages"]["torch"].startswith("2.")


def test_run_file_without_format_reads_as_version_0_and_a_foreign_one_is_named(tmp_path):
    import pytest

    from tailsynth.errors import DataError
    from tailsynth.runinfo import read_run, record_stage

    (tmp_path / "run.yaml").write_text("stages:\n  train:\n    params: {}\n")
    assert read_run(tmp_path)["stages"]["train"] == {"params": {}}
    assert yaml.safe_load(record_stage(tmp_path, "x", {}).read_text())["format"] == "tailsynth-run/1"
    (tmp_path / "run.yaml").write_text("format: kfp-run/2\n")
    with pytest.raises(DataError, match=r"run.yaml: format 'kfp-run/2'; expected a run record \(tailsynth-run/1"):
        record_stage(tmp_path, "x", {})
