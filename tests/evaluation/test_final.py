"""`experiment-augment --final`: every arm trained once on all of a source, read only on another source that may
hold fewer classes (the final model and its external check)."""

import csv
import json

from typer.testing import CliRunner

from tailsynth.cli import app


def test_final_trains_on_all_and_reports_only_the_other_source(ood_setup, tmp_path):
    from tailsynth_testdata import make_npz

    _, npz, _ = ood_setup
    # akiec, bcc, bkl, df, mel, nv, vasc: no BCC and no VASC in the external source
    external = make_npz(tmp_path / "external.npz", {"test": [3, 0, 3, 2, 3, 6, 0]}, seed=11)
    out = tmp_path / "final"
    args = ["experiment-augment", "--data", str(npz), "--out", str(out), "--final", "--eval-data", str(external),
            "--eval-split", "test", "--seeds", "0", "--arms", "real,features,features-real", "--backbone",
            "test_resnet", "--epochs", "1", "--batch-size", "32", "--threads", "1", "--bootstrap", "50", "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "| (a) best real-only |" in r.output and "Per-class recall" in r.output  # the table, printed
    assert json.loads(r.output.strip().splitlines()[-1])["table"].endswith("table.md")
    with open(out / "splits" / "all.csv") as f:
        parts = [row["split"] for row in csv.DictReader(f)]
    assert set(parts) == {"train", "val"} and len(parts) == 100  # every image of the source trains (or picks the epoch)
    res = json.loads((out / "results.json").read_text())
    assert list(res["parts"]) == ["eval"]  # nothing reported on the training source
    e = res["parts"]["eval"]
    assert e["support"]["BCC"] == 0 and e["support"]["VASC"] == 0 and e["support"]["NV"] == 6
    real = e["arms"]["real"]
    assert real["per_class_recall"]["VASC"]["n"] == 0 and real["per_class_recall"]["NV"]["n"] == 1
    c = e["vs_real"]["features"]
    assert c["n_replicates"] == 1 and sum(t["n"] for t in c["mcnemar"].values()) == 17
    lo, hi = c["bootstrap"]["balanced_accuracy"]["ci95"]
    assert lo <= c["bootstrap"]["balanced_accuracy"]["delta"] <= hi
    assert "features" in e["decision"] and "other source" in (out / "table.md").read_text()
    assert not (out / "runs" / "real" / "all_seed0" / "predictions_test.npz").exists()
    record = json.loads((out / "runs" / "features" / "all_seed0" / "feature_arm.json").read_text())
    assert record["reported"] is False  # nothing of the training source was read as a result


def test_final_needs_an_external_source_and_no_folds(ood_setup, tmp_path):
    _, npz, _ = ood_setup
    base = ["experiment-augment", "--data", str(npz), "--out", str(tmp_path / "x"), "--final", "--arms", "real"]
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 1 and "--eval-data" in r.output
    r = CliRunner().invoke(app, base + ["--eval-data", str(npz), "--folds", "2"])
    assert r.exit_code == 1 and "--folds" in r.output


def test_final_external_check_on_ham_layout_folders(tmp_path):
    """The external check as the issue asks for it: both sources are HAM10000-layout folders (metadata CSV,
    `images/`, `masks/`), the external one holds fewer classes and is read whole (`--eval-split all`)."""
    from tailsynth_testdata import make_ham_folder

    train = make_ham_folder(tmp_path / "ham", {"MEL": 6, "NV": 12, "BCC": 5, "AK": 5, "BKL": 5, "DF": 5, "VASC": 5})
    external = make_ham_folder(tmp_path / "unseen", {"MEL": 2, "NV": 4, "AK": 2, "DF": 2}, seed=7)
    out = tmp_path / "final"
    r = CliRunner().invoke(app, ["experiment-augment", "--data", str(train), "--out", str(out), "--final",
                                 "--eval-data", str(external), "--eval-split", "all", "--seeds", "0",
                                 "--arms", "real,features", "--backbone", "test_resnet", "--epochs", "1",
                                 "--resolution", "32", "--batch-size", "16", "--threads", "1", "--bootstrap", "50",
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    assert "| (a) best real-only |" in r.output and "Per-class recall" in r.output
    e = json.loads((out / "results.json").read_text())["parts"]["eval"]
    n_external = sum(1 for _ in (external / "images").glob("*.jpg"))
    assert sum(e["support"].values()) == n_external  # every external image is read, none of the training source
    assert e["support"]["VASC"] == 0 and e["support"]["BCC"] == 0 and e["support"]["DF"] > 0
    assert "features" in e["vs_real"] and "features" in e["decision"]
