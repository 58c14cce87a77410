"""Prediction records: statistics, schema, serving-side records, named errors; shifts touch one class only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tailsynth.data.errors import DataError
from tailsynth.monitor.records import image_hash, read_records
from tailsynth.predictions import image_statistics
from tailsynth.monitor.score import apply_shifts, parse_shift
from tailsynth.predictions import Embedder, JsonlSink, make_record

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


def test_image_statistics_values():
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = 200  # pure red
    st = image_statistics(img)
    assert st["mean_r"] == 200 and st["mean_g"] == 0 and st["height"] == 4 and st["width"] == 6
    assert st["brightness"] == pytest.approx(0.299 * 200) and st["contrast"] == 0 and st["saturation"] == 1
    batch = image_statistics(np.stack([img, img // 2]))
    assert batch["mean_r"].tolist() == [200, 100]
    assert st["sharpness"] == pytest.approx(0, abs=1e-3)  # flat image: no high frequencies
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 255, (28, 28, 3)).astype(np.uint8)
    blurred, _ = apply_shifts(tex[None], ["DF"], [parse_shift("blur:DF")])
    assert image_statistics(blurred[0])["sharpness"] < 0.5 * image_statistics(tex)["sharpness"]


def test_record_schema_and_roundtrip(tmp_path):
    img = np.full((8, 8, 3), 120, np.uint8)
    p = [0.05, 0.1, 0.05, 0.05, 0.05, 0.6, 0.1]
    rec = make_record(probabilities=p, classes=CLASSES, image_stats=image_statistics(img), image_hash=image_hash(img),
                      model_version="abc", embedding=np.arange(5.0), label="DF", request_id="r1")
    assert rec["predicted"] == "DF" and rec["confidence"] == pytest.approx(0.6)
    assert rec["image_hash"] != image_hash(img[:4]) and len(rec["image_hash"]) == 64
    assert "pixels" not in json.dumps(rec) and set(rec["image_stats"]) >= {"brightness", "contrast", "mean_b"}
    JsonlSink(tmp_path / "log.jsonl").write([rec, rec])
    back = read_records(tmp_path / "log.jsonl")
    assert len(back) == 2 and back[0]["embedding"] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="request r2: 2 probabilities for 7 classes"):
        make_record(probabilities=[0.5, 0.5], classes=CLASSES, image_stats={}, image_hash="h", model_version="v",
                    request_id="r2")


def test_serving_records_are_read(tmp_path):
    """The transformer's minimal record (tailsynth.serve.records) is normalised to this schema."""
    from tailsynth.serve.records import JsonlSink as ServeSink
    from tailsynth.serve.records import prediction_record

    rec = prediction_record(request_id="q", image_sha256="ab" * 32, predicted_class="NV",
                            probabilities=dict(zip(CLASSES, [0, 1, 0, 0, 0, 0, 0])), model_version="v1",
                            embedding=[0.1] * 16)
    ServeSink(tmp_path / "serve.jsonl").write([rec])
    back = read_records(tmp_path / "serve.jsonl")[0]
    assert back["predicted"] == "NV" and back["image_hash"] == "ab" * 32 and back["confidence"] == 1.0


def test_bad_log_lines_are_named(tmp_path):
    log = tmp_path / "bad.jsonl"
    good = make_record(probabilities=[1, 0, 0, 0, 0, 0, 0], classes=CLASSES, image_stats={}, image_hash="h",
                       model_version="v", request_id="ok")
    bad = dict(good, request_id="r9")
    del bad["model_version"]
    log.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: record r9 lacks field 'model_version'"):
        read_records(log)
    # A line that is not JSON is what a torn write leaves: skipped and named, not fatal (issue 31). A file of
    # nothing but such lines is not a prediction log at all, and says so naming the first.
    log.write_text("{not json\n")
    back = read_records(log)
    assert back == [] and len(back.skipped) == 1 and str(back.skipped[0]).startswith(f"{log}:1: not valid JSON")
    log.write_text("{not json\nname,class\n")
    with pytest.raises(DataError, match=r"no readable prediction record; 2 bad line\(s\), the first .*bad.jsonl:1: "
                                        r"not valid JSON"):
        read_records(log)
    with pytest.raises(DataError, match="prediction log not found"):
        read_records(tmp_path / "missing.jsonl")


def test_embedder_roundtrip(tmp_path):
    feats = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
    emb = Embedder.fit(feats, dims=4)
    emb.save(tmp_path)
    again = Embedder.load(tmp_path)
    assert np.allclose(again.transform(feats), emb.transform(feats)) and again.dims == 4
    with pytest.raises(ValueError, match="features have 3 dims"):
        emb.transform(feats[:, :3])
    with pytest.raises(FileNotFoundError, match="monitor reference"):
        Embedder.load(tmp_path / "nowhere")


def test_shifts_touch_one_class_only():
    rng = np.random.default_rng(0)
    imgs = rng.integers(40, 200, (6, 16, 16, 3)).astype(np.uint8)
    labels = ["DF", "NV", "DF", "NV", "VASC", "NV"]
    for name in ("brightness", "blur", "hue", "contrast"):
        out, rows = apply_shifts(imgs, labels, [parse_shift(f"{name}:DF")])
        assert rows.tolist() == list(range(6))
        changed = [not np.array_equal(a, b) for a, b in zip(out, imgs)]
        assert changed == [True, False, True, False, False, False], name
    _, rows = apply_shifts(imgs, labels, [parse_shift("share:DF=3")])
    assert sorted(labels[i] for i in rows).count("DF") == 6 and len(rows) == 10
    _, rows = apply_shifts(imgs, labels, [parse_shift("share:NV=0")])
    assert [labels[i] for i in rows] == ["DF", "DF", "VASC"]
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        parse_shift("fog:DF")
    with pytest.raises(ValueError, match="class 'XX' is not one of"):
        parse_shift("blur:XX", CLASSES)
    with pytest.raises(ValueError, match="expected NAME:CLASS"):
        parse_shift("blur")


def test_one_schema_for_serving_and_replay(tmp_path):
    """The serving constructor and the replay constructor give the same typed record; unknown fields are errors."""
    from tailsynth.predictions import PredictionRecord, prediction_record

    probs = dict(zip(CLASSES, [0.1, 0.6, 0.1, 0.05, 0.05, 0.05, 0.05]))
    served = prediction_record(request_id="q", image_sha256="ab" * 32, predicted_class="NV", probabilities=probs,
                               model_version="v1", image_stats={"brightness": 3.0}, timestamp="t", item=0)
    replayed = make_record(probabilities=list(probs.values()), classes=CLASSES, image_stats={"brightness": 3.0},
                           image_hash="ab" * 32, model_version="v1", request_id="q", timestamp="t", item=0)
    assert served == replayed
    assert PredictionRecord.from_dict(dict(served), "x").to_dict() == served
    with pytest.raises(DataError, match=r"log.jsonl:3: record q: unknown field\(s\) pixels"):
        PredictionRecord.from_dict({**served, "pixels": [1, 2]}, "log.jsonl:3")
