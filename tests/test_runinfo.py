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
