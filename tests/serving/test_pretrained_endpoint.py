"""An ImageNet-pretrained EfficientNet-Lite0 (package weights) served end to end: its own input normalization
travels from the model folder through the ONNX graph to the endpoint, so real HAM10000 JPEGs get the same top-1
from the server as from the torch model."""

from __future__ import annotations

import numpy as np
import pytest

import serving_checks as chk

RES = 64
BACKBONE = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_model(ham10000, tmp_path_factory):
    """Pretrained trunk + a linear head fitted on 700 real HAM10000 images (seconds), saved with the weights'
    normalization as training saves it. Returns (model folder, held-out JPEG bytes)."""
    import torch

    from tailsynth.classify.model import ClassifierMeta, build_backbone, preprocess, save_classifier
    from tailsynth.classify.pretrained import SOURCES
    from tailsynth.data import load_source

    torch.manual_seed(0)
    ds = load_source(ham10000)
    rng = np.random.default_rng(0)
    recs = [ds.records[i] for i in rng.permutation(len(ds.records))]
    train, held = recs[:700], recs[700:764]
    src = SOURCES[BACKBONE]
    meta = ClassifierMeta(backbone=BACKBONE, classes=list(ds.classes), resolution=RES, mean=list(src.mean),
                          std=list(src.std))
    model = build_backbone(BACKBONE, len(ds.classes), pretrained="imagenet").eval()
    x, y = ds.subset(train).arrays(RES)
    with torch.no_grad():
        f = model.forward_head(model.forward_features(preprocess(x, meta)), pre_logits=True)
    head = model.get_classifier()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    yt = torch.from_numpy(np.asarray(y))
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(head(f), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("lite0")
    save_classifier(model, out, backbone=BACKBONE, classes=ds.classes, resolution=RES, mean=src.mean, std=src.std,
                    config={"pretrained": "imagenet", "test_fixture": True}, data_revision="test-fixture")
    from pathlib import Path

    return out, [Path(r.path).read_bytes() for r in held]


def test_pretrained_lite0_served_like_torch(lite0_model, tmp_path, server_cls):
    from tailsynth.classify.model import load_classifier
    from tailsynth.export import export_model

    folder, images = lite0_model
    repo = tmp_path / "repo"
    export_model(folder, repo, "local")
    model, meta = load_classifier(folder)
    assert meta.mean == [0.5, 0.5, 0.5]
    server = server_cls(repo, "onnxruntime", None, tmp_path / "predictions.jsonl").wait_ready()
    try:
        # two requests: the endpoint takes at most 32 images a request
        preds = [p for i in (0, 32) for p in chk.assert_same_as_torch(server, (model, meta), images[i : i + 32])]
    finally:
        server.stop()
    # The linear probe on pretrained features knows something about lesions: better than always-NV on these 64.
    got = np.array([meta.classes.index(p["class"]) for p in preds])
    assert len(set(got.tolist())) > 1
