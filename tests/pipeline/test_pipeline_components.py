"""Component functions called directly (`.python_func`) with real artifact objects and tiny real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest


def test_validate_stages_and_subsamples(tmp_path, tiny_npz, artifact):
    from components import validate

    data = artifact("dataset", tmp_path / "data")
    report = artifact("artifact", tmp_path / "report")
    metrics = artifact("metrics", tmp_path / "metrics")
    digest = validate.python_func(source=str(tiny_npz), data_revision="rev-1", max_per_class=3, seed=0,
                                  data=data, report=report, metrics=metrics)
    staged = np.load(tmp_path / "data" / "tiny.npz")
    y = staged["train_labels"].reshape(-1)
    # make_npz's train counts are [6, 6, 8, 3, 8, 20, 3]: every class capped at 3
    assert np.bincount(y).tolist() == [3] * 7
    assert staged["train_images"].shape == (21, 28, 28, 3)
    assert data.metadata["data_revision"] == "rev-1" and data.metadata["content_hash"] == digest
    assert metrics.metadata["validation_ok"] == 1.0


def test_validate_rejects_bad_source(tmp_path, artifact):
    from components import validate
    from tailsynth.data.errors import DataError

    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="broken.npz"):
        validate.python_func(source=str(bad), data_revision="r", max_per_class=0, seed=0,
                             data=artifact("dataset", tmp_path / "d"), report=artifact("artifact", tmp_path / "r"),
                             metrics=artifact("metrics", tmp_path / "m"))


def test_split_keeps_lesions_together(tmp_path, tiny_isic, artifact):
    from components import split

    splits = artifact("dataset", tmp_path / "splits.csv")
    metrics = artifact("metrics", tmp_path / "m")
    split.python_func(data=artifact("dataset", tiny_isic), seed=0, val_fraction=0.25, test_fraction=0.0,
                      train_fraction=1.0, splits=splits, metrics=metrics)
    rows = list(csv.DictReader(Path(tmp_path / "splits.csv").read_text().splitlines()))
    assert len(rows) == 45
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())
    assert {r["split"] for r in rows} == {"train", "val"}
    assert metrics.metadata["train.NV"] + metrics.metadata["val.NV"] == 12


def test_split_train_fraction_drops_whole_lesions_from_train_only(tmp_path, tiny_isic, artifact):
    from components import split

    rows = {}
    for fraction in (1.0, 0.5):
        out = artifact("dataset", tmp_path / f"splits-{fraction}.csv")
        metrics = artifact("metrics", tmp_path / f"m-{fraction}")
        split.python_func(data=artifact("dataset", tiny_isic), seed=0, val_fraction=0.25, test_fraction=0.0,
                          train_fraction=fraction, splits=out, metrics=metrics)
        rows[fraction] = list(csv.DictReader(Path(out.path).read_text().splitlines()))
    assert metrics.metadata["train_fraction"] == 0.5 and out.metadata["train_fraction"] == 0.5
    full, half = ({r["image_id"]: r for r in rows[f]} for f in (1.0, 0.5))
    assert set(half) < set(full)
    assert {i for i, r in full.items() if r["split"] == "val"} == {i for i, r in half.items() if r["split"] == "val"}
    dropped_groups = {full[i]["group_id"] for i in set(full) - set(half)}
    assert dropped_groups and not dropped_groups & {r["group_id"] for r in half.values()}  # lesions leave whole


def test_shard_plan():
    from components import shard_plan

    assert shard_plan.python_func(num_shards=3) == [0, 1, 2]
    with pytest.raises(ValueError, match="num_shards"):
        shard_plan.python_func(num_shards=0)


def _evaluation(folder, arm, ba, recalls):
    folder.mkdir(parents=True)
    per_class = {c: {"recall": r, "support": 10} for c, r in recalls.items()}
    (folder / "evaluation.json").write_text(json.dumps(
        {"arm": arm, "balanced_accuracy": ba, "per_class": per_class, "classes": list(recalls)}))
    return folder


def _selection(folder, n_kept: int):
    from tailsynth.ood.selection import Selection

    Selection(folder).write_record({"overall": {"n_candidates": 4, "n_kept": n_kept}})
    return folder


def test_compare_returns_delta_and_writes_one_row_per_arm(tmp_path, artifact):
    from components import compare

    b = _evaluation(tmp_path / "b", "real-only", 0.5, {"NV": 0.9, "DF": 0.1})
    a = _evaluation(tmp_path / "a", "real+synthetic", 0.6, {"NV": 0.8, "DF": 0.4})
    metrics = artifact("metrics", tmp_path / "m")
    kept, none = _selection(tmp_path / "kept", 3), _selection(tmp_path / "none", 0)
    delta = compare.python_func(baseline=artifact("dataset", b), augmented=artifact("dataset", a),
                                selected=artifact("dataset", kept), comparison=artifact("dataset", tmp_path / "cmp.csv"),
                                metrics=metrics)
    assert delta == pytest.approx(0.1)
    # Nothing regenerated (the gate or the floor stopped every class): never exported as regenerated.
    from tailsynth.evaluation.promotion import NO_SYNTHETIC_MARGIN

    assert compare.python_func(baseline=artifact("dataset", b), augmented=artifact("dataset", a),
                               selected=artifact("dataset", none), comparison=artifact("dataset", tmp_path / "c2.csv"),
                               metrics=artifact("metrics", tmp_path / "m2")) == NO_SYNTHETIC_MARGIN
    rows = list(csv.DictReader(Path(tmp_path / "cmp.csv").read_text().splitlines()))
    assert [r["method"] for r in rows] == ["real-only", "real+synthetic"]
    assert list(rows[0]) == ["method", "balanced_accuracy", "recall_NV", "recall_DF"]
    assert float(rows[1]["recall_DF"]) == pytest.approx(0.4)
    assert metrics.metadata["balanced_accuracy_delta"] == pytest.approx(0.1)


def _version_inputs(tmp_path, artifact):
    syn = tmp_path / "selected"
    (syn / "images").mkdir(parents=True)
    (syn / "images" / "a.png").write_bytes(b"png bytes")
    real = tmp_path / "data"
    real.mkdir()
    (real / "tiny.npz").write_bytes(b"npz bytes")
    diff = tmp_path / "diffusion"
    (diff / "unet").mkdir(parents=True)
    (diff / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    return dict(synthetic=artifact("dataset", syn), data=artifact("dataset", real),
                candidates=artifact("dataset", tmp_path), diffusion=artifact("model", diff))


def test_version_without_remote_records_revisions(tmp_path, artifact):
    from components import version
    from tailsynth.data.versioning import dvc_md5

    record = artifact("artifact", tmp_path / "record.json")
    rev = version.python_func(**_version_inputs(tmp_path, artifact), data_revision="sha256:abc", content_hash="123",
                              remote="", record=record)
    assert rev == dvc_md5(tmp_path / "selected")
    entry = json.loads((tmp_path / "record.json").read_text())
    assert entry["sets"]["real"]["data_revision"] == "sha256:abc" and entry["real_content_hash"] == "123"
    assert entry["sets"]["real"]["md5"] == dvc_md5(tmp_path / "data") and entry["remote"] is None
    assert not entry["sets"]["synthetic"]["pushed"]


def test_version_pushes_to_a_local_folder_and_rejects_other_schemes(tmp_path, artifact):
    from components import version
    from tailsynth.data.versioning import VersioningError

    store = tmp_path / "store"
    rev = version.python_func(**_version_inputs(tmp_path, artifact), data_revision="r", content_hash="h",
                              remote=str(store), record=artifact("artifact", tmp_path / "rec.json"))
    assert (store / "files" / "md5" / rev[:2] / rev[2:]).is_file()  # DVC 3's content-addressed layout
    with pytest.raises(VersioningError, match="s3://"):
        version.python_func(**_version_inputs(tmp_path / "b", artifact), data_revision="r", content_hash="h",
                            remote="gs://bucket", record=artifact("artifact", tmp_path / "rec2.json"))


def test_shipped_synthesizer_hash_is_a_parameter_and_checked(tmp_path, artifact):
    """The synthesizer's task is keyed by its parameters: local runs pass the weights' hash, and the task refuses
    weights that no longer match it (a stale cache key would otherwise reuse the old synthesizer)."""
    from components import train_diffusion
    from pipelines.local import local_parameters
    from tailsynth.diffusion.model import model_hash

    params = local_parameters("cpu", dvc_remote="unused")
    shipped = params["diffusion_model"]
    assert params["diffusion_model_hash"] == model_hash(shipped) and len(params["diffusion_model_hash"]) == 12
    assert local_parameters("tiny", dvc_remote="unused")["diffusion_model_hash"] == ""  # trains its own

    def run(hash_: str, name: str):
        model = artifact("model", tmp_path / name)
        unused = {k: artifact("dataset", tmp_path / k) for k in ("data", "splits", "masks")}
        train_diffusion.python_func(**unused, model_size="lean", resolution=28, steps=0, batch_size=0,
                                    max_minutes=0.0, seed=0, pretrained=shipped, pretrained_hash=hash_,
                                    finetune_minutes=0.0, model=model, metrics=artifact("metrics", tmp_path / "m"))
        return model

    assert run(params["diffusion_model_hash"], "ok").metadata["model_hash"] == params["diffusion_model_hash"]
    with pytest.raises(ValueError, match="differs from pretrained_hash 000000000000"):
        run("000000000000", "stale")
