"""Readers: exact counts on the real data beside the project, and behaviour on tiny generated data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import GT, read_rows, write_rows
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.data import DataError, load_source

# ../shared/data/README.md, DermaMNIST table (label order akiec,bcc,bkl,df,mel,nv,vasc -> ISIC names).
DERMAMNIST = {
    "train": {"AK": 228, "BCC": 359, "BKL": 769, "DF": 80, "MEL": 779, "NV": 4693, "VASC": 99},
    "val": {"AK": 33, "BCC": 52, "BKL": 110, "DF": 12, "MEL": 111, "NV": 671, "VASC": 14},
}
SAMPLE180 = {"MEL": 159, "NV": 200, "BCC": 294, "AK": 97, "BKL": 358, "DF": 78, "VASC": 106, "SCC": 144}
LABELS_TRAIN = {"NV": 12875, "MEL": 4522, "BCC": 3323, "BKL": 2624, "AK": 867, "SCC": 628, "VASC": 253, "DF": 239}


def test_dermamnist_counts_exact(dermamnist_npz):
    ds = load_source(dermamnist_npz)
    assert ds.format == "medmnist"
    assert ds.splits == ["train", "val"]
    for split, counts in DERMAMNIST.items():
        assert ds.class_counts(split) == counts
    assert len(ds.split("train")) == 7007 and len(ds.split("val")) == 1003
    x, y = ds.split("val").arrays()
    assert x.shape == (1003, 28, 28, 3) and x.dtype == np.uint8
    assert np.bincount(y, minlength=len(ds.classes)).sum() == 1003


def test_isic_sample180_counts_exact(isic_sample):
    ds = load_source(isic_sample)
    assert ds.format == "isic2019" and ds.splits == ["all"]
    assert ds.class_counts("all") == SAMPLE180
    assert len(ds) == 1436
    img = ds.image(ds.records[0])
    assert img.shape == (180, 180, 3) and img.dtype == np.uint8
    assert ds.image(ds.records[0], 64).shape == (64, 64, 3)
    # lesion ids from the metadata become groups; several images share one
    assert len({r.group_id for r in ds.records}) < len(ds)


def test_isic_labels_only_training_counts(shared_data):
    ds = load_source(shared_data / "isic2019-labels")  # no image folder: images are not opened by the reader
    assert len(ds) == 25331
    counts = ds.class_counts("all")
    assert {c: n for c, n in counts.items() if n} == LABELS_TRAIN
    assert counts.get("UNK", 0) == 0
    assert any(r.image_id.endswith("_downsampled") for r in ds.records)  # the suffix is part of the name


def test_isic_labels_only_test_ground_truth(shared_data):
    ds = load_source(shared_data / "isic2019-labels", part="test")  # integer one-hot, includes UNK
    assert len(ds) == 8238
    assert ds.splits == ["test"]
    assert ds.class_counts("test")["UNK"] == 2047


def test_stats_cli_json_on_real_npz(dermamnist_npz):
    res = CliRunner().invoke(app, ["data", "stats", str(dermamnist_npz), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.stdout)
    assert st["format"] == "medmnist" and st["splits"]["train"]["AK"] == 228 and st["splits"]["val"]["DF"] == 12


def test_stats_cli_json_on_real_isic_folder(isic_sample):
    res = CliRunner().invoke(app, ["data", "stats", str(isic_sample), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.stdout)
    assert st == {"source": str(isic_sample), "format": "isic2019", "splits": {"all": SAMPLE180}}


def test_tiny_isic_reader(tiny_isic):
    ds = load_source(tiny_isic)
    assert ds.classes == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
    assert ds.class_counts("all")["NV"] == 12
    assert ds.records[0].group_id == ds.records[1].group_id == "HAM_0000000"
    x, y = ds.arrays(16)
    assert x.shape == (len(ds), 16, 16, 3)
    assert [ds.classes[i] for i in y] == [r.label for r in ds.records]


def test_integer_one_hot_and_downsampled_names(tmp_path):
    from tailsynth_testdata import make_isic_folder

    root = make_isic_folder(tmp_path / "isic", ["MEL", "NV", "DF"], one_hot_as_int=True)
    # rename one image and its rows to the `_downsampled` form used by part of ISIC 2019
    header, rows = read_rows(root / GT)
    old = rows[1]["image"]
    rows[1]["image"] = old + "_downsampled"
    write_rows(root / GT, header, rows)
    src = root / "ISIC_2019_Training_Input" / f"{old}.jpg"
    src.rename(src.with_name(f"{old}_downsampled.jpg"))
    ds = load_source(root)
    rec = {r.image_id: r for r in ds.records}[old + "_downsampled"]
    assert rec.label == "NV"
    assert ds.image(rec).shape == (32, 32, 3)


def test_tiny_npz_maps_medmnist_labels(tiny_npz):
    ds = load_source(tiny_npz)
    # tiny_npz: train per label [6, 6, 8, 3, 8, 20, 3] in akiec,bcc,bkl,df,mel,nv,vasc order
    assert ds.class_counts("train") == {"MEL": 8, "NV": 20, "BCC": 6, "AK": 6, "BKL": 8, "DF": 3, "VASC": 3}


def test_reader_names_missing_column(tiny_isic):
    header, rows = read_rows(tiny_isic / GT)
    header.remove("BCC")
    write_rows(tiny_isic / GT, header, rows)
    with pytest.raises(DataError, match=r"missing class column\(s\) BCC"):
        load_source(tiny_isic)


def test_reader_names_two_hot_row(tiny_isic):
    header, rows = read_rows(tiny_isic / GT)
    rows[4]["MEL"] = "1.0"  # row 4 is NV: now two classes
    write_rows(tiny_isic / GT, header, rows)
    with pytest.raises(DataError, match=rf"row 6 \(image '{rows[4]['image']}'\) is not one-hot: 2 classes"):
        load_source(tiny_isic)


def test_unknown_source_is_named(tmp_path):
    with pytest.raises(DataError, match="data source not found"):
        load_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unknown data source"):
        load_source(tmp_path / "empty")


def test_npz_images_survive_split_relabel(tiny_npz):
    """A split manifest may rename npz splits (e.g. 'fit'); pixels must still come from the original array."""
    from tailsynth.data import load_source

    ds = load_source(tiny_npz)
    first = ds.records[0]
    relabelled = ds.with_splits({r.image_id: "fit" for r in ds.records})
    img = relabelled.image(relabelled.records[0])
    assert (img == ds.image(first)).all()
