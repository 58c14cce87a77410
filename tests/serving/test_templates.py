"""serving/model_repository is what the exporter writes (guards against the template drifting from the code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailsynth.export import (ENSEMBLE_NAME, POSTPROCESS_NAME, PREPROCESS_NAME, ensemble_config,
                              postprocess_config, preprocess_config, triton_config)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "serving" / "model_repository"
COMMON = dict(classes=["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"], resolution=64, feature_dim=512,
              version="<sha256-12>")


@pytest.mark.parametrize("target, extra", [("cluster", {"tensorrt": True}), ("local", {})])
def test_template_configs_match_the_exporter(target, extra):
    assert (TEMPLATE / target / "lesion-classifier" / "config.pbtxt").read_text() == \
        triton_config(target=target, **COMMON, **extra)


@pytest.mark.parametrize("target", ["cluster", "local"])
def test_template_ensemble_configs_match_the_exporter(target):
    # The same three configs for both targets: preprocess and postprocess are python-backend models everywhere.
    want = {PREPROCESS_NAME: preprocess_config(resolution=COMMON["resolution"]),
            POSTPROCESS_NAME: postprocess_config(**COMMON),
            ENSEMBLE_NAME: ensemble_config(classes=COMMON["classes"], resolution=COMMON["resolution"],
                                           version=COMMON["version"])}
    for name, text in want.items():
        assert (TEMPLATE / target / name / "config.pbtxt").read_text() == text, name


def test_sample_requests_are_accepted_shapes():
    import base64
    import json

    from tailsynth.serve.images import decode_image

    v1 = json.loads((ROOT / "serving/samples/v1-json/input.json").read_text())
    v2 = json.loads((ROOT / "serving/samples/v2-binary/input.json").read_text())
    for b64 in (v1["instances"][0]["image_bytes"]["b64"], v2["inputs"][0]["data"][0]):
        assert decode_image(base64.b64decode(b64), 32).shape == (32, 32, 3)
