"""Monitor fixtures: a small classifier trained here on part of DermaMNIST train, and its reference records
on real held-out images (the rest of train + val, split at random into a reference half and a live half)."""

from __future__ import annotations

from pathlib import Path

import pytest
from local_servers import moto_server

# Enough to predict every class now and then; the drift tests do not need an accurate model.
QUICK = {"backbone": "test_resnet", "max_steps": 40, "fit": 5000}


@pytest.fixture(scope="session")
def drill(dermamnist_npz, tmp_path_factory) -> dict:
    import torch

    from tailsynth.monitor.drill import drill_manifest, train_quick_classifier
    from tailsynth.monitor.reference import build_reference

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("monitor_drill")
    manifest = root / "manifest.csv"
    sizes = drill_manifest(dermamnist_npz, manifest, fit=QUICK["fit"], seed=0)
    model = root / "model"
    train = train_quick_classifier(dermamnist_npz, manifest, model, backbone=QUICK["backbone"],
                                   max_steps=QUICK["max_steps"], batch_size=64, seed=0)
    ref = build_reference(model, dermamnist_npz, split="ref", splits=manifest)
    return {"data": dermamnist_npz, "manifest": manifest, "model": model, "sizes": sizes, "train": train,
            "reference": Path(ref["reference"]), "root": root}


@pytest.fixture(scope="session")
def live_records(drill) -> list[dict]:
    """The live half scored once, unshifted (reused by the i.i.d. tests)."""
    from tailsynth.monitor.score import score_dataset

    res = score_dataset(drill["model"], drill["data"], split="live", splits=drill["manifest"],
                        out=drill["root"] / "live_iid.jsonl")
    return res["records_list"]


@pytest.fixture
def moto_s3(monkeypatch):
    """A real S3-compatible endpoint (moto_server) on 127.0.0.1, stopped afterwards; yields its URL."""
    with moto_server() as url:
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL_S3": url}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        yield url
