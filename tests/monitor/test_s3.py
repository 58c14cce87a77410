"""S3 sink, S3 log and reference reading, and report publishing against a real moto_server."""

from __future__ import annotations

import json

import boto3
import numpy as np

from tailsynth.monitor.records import S3Sink, read_records
from tailsynth.monitor.report import build_window_report
from tailsynth.predictions import make_record

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


def _records(rng, n, prefix, bright=0.0):
    out = []
    for i in range(n):
        p = rng.dirichlet(np.ones(7))
        stats = {"brightness": rng.normal(120, 10) + bright, "contrast": rng.normal(30, 3), "mean_r": rng.normal(150, 9),
                 "mean_g": rng.normal(110, 9), "mean_b": rng.normal(100, 9), "saturation": rng.random(),
                 "height": 28, "width": 28}
        out.append(make_record(probabilities=p, classes=CLASSES, image_stats=stats, image_hash=f"h{prefix}{i}",
                               model_version="v1", embedding=rng.normal(size=3), request_id=f"{prefix}{i}"))
    return out


def test_sink_roundtrip_and_published_report(moto_s3, tmp_path):
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    s3.create_bucket(Bucket="tail")
    rng = np.random.default_rng(0)
    sink = S3Sink("s3://tail/predictions")
    assert sink.write(_records(rng, 300, "a")) == 300 and sink.write(_records(rng, 200, "b")) == 200
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="tail", Prefix="predictions/")["Contents"]]
    assert len(keys) == 2 and all(k.endswith(".jsonl") and k.count("/") == 5 for k in keys)  # .../YYYY/MM/DD/HH/
    back = read_records("s3://tail/predictions/")
    assert len(back) == 500 and {r["request_id"][0] for r in back} == {"a", "b"}

    ref = _records(rng, 600, "r")
    s3.put_object(Bucket="tail", Key="models/m/monitor/reference.jsonl",
                  Body="".join(json.dumps(r) + "\n" for r in ref).encode())
    cfg = tmp_path / "m.yaml"
    cfg.write_text("tail:\n  classes: [DF, VASC]\n")
    s = build_window_report("s3://tail/predictions/", "s3://tail/models/m/monitor/reference.jsonl", tmp_path / "pub" / "w1",
                     config=cfg, window="w1", publish_to="s3://tail/monitoring", evidently=False)
    assert s["flagged"] == [] and s["group_by"] == "predicted"
    pub = {o["Key"] for o in s3.list_objects_v2(Bucket="tail", Prefix="monitoring/")["Contents"]}
    assert {"monitoring/index.html", "monitoring/audit.jsonl", "monitoring/w1/summary.json",
            "monitoring/w1/report.html"} <= pub

    # A second run elsewhere (a fresh CronJob pod) pulls earlier windows, so the published index lists both.
    s2 = build_window_report("s3://tail/predictions/", "s3://tail/models/m/monitor/reference.jsonl",
                      tmp_path / "pod2" / "w2", config=cfg, window="w2", publish_to="s3://tail/monitoring",
                      evidently=False)
    assert s2["window"] == "w2"
    index = s3.get_object(Bucket="tail", Key="monitoring/index.html")["Body"].read().decode()
    assert "w1" in index and "w2" in index


def test_serving_records_with_raw_features_are_projected(tmp_path):
    """The transformer logs full penultimate features under its own field names; the report projects them
    with the PCA stored beside the reference and compares them with the reference embedding."""
    from tailsynth.predictions import Embedder, JsonlSink
    from tailsynth.serve.records import prediction_record

    rng = np.random.default_rng(1)
    feats = rng.normal(size=(400, 16)).astype(np.float32)
    model = tmp_path / "model"
    emb = Embedder.fit(feats[:200], dims=3)
    emb.save(model)
    ref = _records(rng, 200, "r")
    for r, e in zip(ref, emb.transform(feats[:200])):
        r["embedding"] = e.tolist()
    JsonlSink(model / "monitor" / "reference.jsonl").write(ref)
    shifted = feats[200:] + np.r_[3.0, np.zeros(15)].astype(np.float32)  # a clear embedding shift
    live = [prediction_record(request_id=f"q{i}", image_sha256=f"{i:064x}", predicted_class=r["predicted"],
                              probabilities=r["probabilities"], model_version="v1", embedding=f.tolist(),
                              image_stats=r["image_stats"])
            for i, (r, f) in enumerate(zip(_records(rng, 200, "x"), shifted))]
    JsonlSink(tmp_path / "serve.jsonl").write(live)
    cfg = tmp_path / "m.yaml"
    cfg.write_text("tail:\n  classes: [DF, VASC]\ndrift:\n  min_samples: 10\n")
    s = build_window_report(tmp_path / "serve.jsonl", model / "monitor" / "reference.jsonl", tmp_path / "rep" / "w",
                     config=cfg, evidently=False)
    assert any(info["embedding_drift"] for info in s["classes"].values())
    assert not any(info["image_drift"] for info in s["classes"].values())
