"""The synthesizer gate on a random-initialized synthesizer: the probe fails, `warn` records it and passes no
class, `require` stops with the class, the gate and the figures, `off` passes every class unprobed."""

import json

import pytest

from tailsynth.errors import ConfigError
from tailsynth.ood.synth_gate import GATE_FILE, SynthesizerGateError, check_policy, read_gate, run_synth_gate


@pytest.fixture(scope="module")
def random_synth(ood_setup, tmp_path_factory):
    import torch

    from tailsynth.diffusion.train import train_diffusion

    torch.manual_seed(0)
    _, npz, _ = ood_setup
    model = tmp_path_factory.mktemp("synth") / "model"
    train_diffusion(str(npz), "tiny", model, resolution=16, steps=1, batch_size=4)
    return model


def _gate(ood_setup, random_synth, out, policy):
    from tailsynth.classify.model import feature_model
    from tailsynth.ood.synth_gate import ProbeSettings

    root, npz, _ = ood_setup
    return run_synth_gate(random_synth, str(npz), None, None, feature_model(root / "clf"), ["DF", "VASC"], out,
                          policy=policy, probe=ProbeSettings(sampler="ddim", steps=3, guidance=1.5, count=8))


def test_warn_records_the_failing_classes_and_passes_none(ood_setup, random_synth, tmp_path):
    rec = _gate(ood_setup, random_synth, tmp_path / "g", "warn")
    assert rec["passing"] == [] and rec["failing"] == ["DF", "VASC"]
    for cls in ("DF", "VASC"):
        v = rec["per_class"][cls]
        assert v["n_probe"] == 8 and "in-distribution" in v["failed"] and v["floor_share"] < v["floor_share_real"]
    assert read_gate(tmp_path / "g") == json.loads((tmp_path / "g" / GATE_FILE).read_text())


def test_require_stops_naming_class_gate_and_figures_and_keeps_the_record(ood_setup, random_synth, tmp_path):
    with pytest.raises(SynthesizerGateError, match=r"DF fails .*in-distribution .* of the probe pass the floor"):
        _gate(ood_setup, random_synth, tmp_path / "g", "require")
    assert read_gate(tmp_path / "g")["failing"] == ["DF", "VASC"]


def test_off_passes_every_class_without_a_probe(ood_setup, random_synth, tmp_path):
    rec = _gate(ood_setup, random_synth, tmp_path / "g", "off")
    assert rec["passing"] == ["DF", "VASC"] and rec["probe"] is None and not (tmp_path / "g" / "probe").exists()


def test_unknown_policy_and_foreign_record_are_named(tmp_path):
    with pytest.raises(ConfigError, match="synth_gate 'maybe'"):
        check_policy("maybe")
    (tmp_path / GATE_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(Exception, match="expected 'tailsynth.synth-gate/1'"):
        read_gate(tmp_path)
