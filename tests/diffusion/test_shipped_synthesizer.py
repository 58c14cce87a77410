"""The synthesizer shipped in models/: its format, its card, and that it generates (default tier, seconds)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ship_writes_fp16_weights_a_card_and_loads_back_in_fp32(tiny_model, tmp_path):
    from safetensors import safe_open

    from tailsynth.cards import CARD_MD, SCHEMA
    from tailsynth.diffusion.card import ship
    from tailsynth.diffusion.model import install_pretrained, load_model, model_hash, read_card

    model, data = tiny_model
    card = ship(model, tmp_path / "s", "tiny-test", commands=["tailsynth train diffusion ..."])
    st = tmp_path / "s" / "unet" / "diffusion_pytorch_model.safetensors"
    with safe_open(str(st), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    assert card["weights_hash"] == model_hash(tmp_path / "s") and read_card(tmp_path / "s") == card
    assert card["images_seen"] == card["steps"] * card["batch_size"] and card["data"]["sha256"] is None  # a folder
    assert card["schema"] == SCHEMA and card["kind"] == "synthesizer" and card["version"] == card["weights_hash"]
    md = (tmp_path / "s" / CARD_MD).read_text()
    assert "tiny-test" in md and "Reproduce" in md and "tailsynth train diffusion ..." in md
    unet, _, meta = load_model(tmp_path / "s")
    assert next(unet.parameters()).dtype.is_floating_point and str(next(unet.parameters()).dtype) == "torch.float32"
    info = install_pretrained(tmp_path / "s", tmp_path / "run_model")
    assert info["model_hash"] == card["weights_hash"] and info["pretrained_from"] == str(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="not a synthesizer"):
        install_pretrained(tmp_path, tmp_path / "x")


def test_ship_refuses_weights_over_the_size_limit(tiny_model, tmp_path):
    from tailsynth.diffusion.card import ship

    model, _ = tiny_model
    with pytest.raises(ValueError, match="over the"):
        ship(model, tmp_path / "s", "t", max_mb=0.001)


def _gates_record(model_hash: str, lf_ak: float) -> dict:
    gate = {"label_fidelity": lf_ak, "label_fidelity_real": 0.4, "label_fidelity_ratio": lf_ak / 0.4,
            "label_fidelity_pass": lf_ak / 0.4 >= 0.8, "n_synthetic": 150, "n_real": 37, "n": 37, "tos_recall": 0.5,
            "real_recall": 0.7, "tos_ratio": 0.71, "tos_pass": True, "memorized_fraction": 0.0}
    return {"model": "x", "model_hash": model_hash, "classifier": "runs/gate-clf", "all_pass": lf_ak >= 0.32,
            "gates": {"inpaint": {"AK": gate}},
            "config": {"strength": 0.5, "sampler": "dpmsolver", "steps": 20, "guidance": 3.0,
                       "gate_backbone": "test_resnet", "gate_epochs": 5, "gate_seeds": [0]}}


def test_regate_puts_new_gates_into_a_shipped_card_for_those_weights_only(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from tailsynth.cli import app
    from tailsynth.diffusion.card import regate, ship
    from tailsynth.diffusion.model import model_hash, read_card
    from tailsynth.errors import ConfigError

    model, _ = tiny_model
    shipped = tmp_path / "s"
    ship(model, shipped, "tiny-test", commands=["train ..."])
    weights = (shipped / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    # Gates of other weights are refused and nothing is written.
    with pytest.raises(ConfigError, match="measured on weights 'abc'"):
        regate(shipped, _gates_record("abc", 0.3))
    assert "gates" not in read_card(shipped)["metrics"]
    card = regate(shipped, _gates_record(model_hash(shipped), 0.3), commands=["synth-quality ..."],
                  notes=["re-measured"], when="2026-12-08")
    assert card["metrics"]["gates"]["inpaint"]["AK"]["label_fidelity"] == 0.3 and card["gate_classifier"] == "runs/gate-clf"
    assert card["commands"] == ["train ...", "synth-quality ..."] and card["notes"] == ["re-measured"]
    assert "gates re-measured 2026-12-08" in card["changelog"][card["version"]] and read_card(shipped) == card
    assert (shipped / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    md = (shipped / "model_card.md").read_text()
    assert "| inpaint | AK |" in md and "150 / 37" in md and "0.750 FAIL" in md
    # The shipped folder is no training folder: shipping from it is refused by name, before anything is written.
    with pytest.raises(ConfigError, match="not a training folder .*config.json, loss.csv missing.*regate-synthesizer"):
        ship(shipped, tmp_path / "again", "t")
    assert not (tmp_path / "again").exists()
    q = tmp_path / "gates.json"
    q.write_text(json.dumps(_gates_record(model_hash(shipped), 0.36)))
    r = CliRunner().invoke(app, ["regate-synthesizer", "--model", str(shipped), "--quality", str(q)])
    assert r.exit_code == 0 and json.loads(r.output)["gates_all_pass"] is True, r.output
    r = CliRunner().invoke(app, ["regate-synthesizer", "--model", str(shipped), "--quality", str(tmp_path / "no")])
    assert r.exit_code != 0 and "--quality" in r.output and "no" in r.output


# Every synthesizer shipped in models/, with the data it was trained on and what its card must at least claim.
SHIPPED_MODELS = {"synth-dermamnist": {"data": "dermamnist_npz", "px": 28, "min_images_seen": 300_000},
                  "synth-ham64": {"data": "ham10000", "px": 64, "min_images_seen": 150_000}}


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_files_and_card(name):
    shipped = ROOT / "models" / name
    if not shipped.is_dir():
        pytest.skip(f"{shipped} not present")
    from tailsynth.diffusion.model import SHIPPED_FILES, model_hash, read_card

    for f in SHIPPED_FILES:
        assert (shipped / f).is_file(), f
    card = read_card(shipped)  # of the one card schema (tailsynth.cards), else a DataError
    assert card["weights_hash"] == card["version"] == model_hash(shipped)  # the card describes these exact weights
    assert (shipped / "model_card.md").is_file() and not (shipped / "MODEL_CARD.md").exists()
    assert (shipped / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size <= 8 * 2**20
    assert card["images_seen"] >= SHIPPED_MODELS[name]["min_images_seen"]
    assert card["resolution"] == SHIPPED_MODELS[name]["px"]
    for mode in ("inpaint", "harmonize"):
        assert set(card["metrics"]["gates"][mode]) >= {"DF", "VASC", "AK"}


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_generates_four_images_per_tail_class(name, request, tmp_path):
    shipped, spec = ROOT / "models" / name, SHIPPED_MODELS[name]
    if not shipped.is_dir():
        pytest.skip(f"{shipped} not present")
    data = request.getfixturevalue(spec["data"])  # skips with the reason when the shared data is absent
    from tailsynth.data import load_source
    from tailsynth.data.isic import decode_file
    from tailsynth.diffusion.generate import generate

    px = spec["px"]
    src = load_source(data)
    real, _ = src.subset(src.records[:300]).arrays(px)
    dx_real = np.abs(np.diff(real.astype(float), axis=2)).mean()
    for mode in ("inpaint", "harmonize"):
        out = tmp_path / mode
        res = generate(shipped, data, out, classes="DF,VASC,AK", policy="fixed", count=4,
                       sampler="dpmsolver", steps=10, guidance=2.0, batch_size=12, mode=mode)
        assert res["per_class"] == {"DF": 4, "VASC": 4, "AK": 4}
        rows = list(csv.DictReader((out / "manifest.csv").read_text().splitlines()))
        imgs = np.stack([decode_file(str(out / "images" / f"{r['id']}.png")) for r in rows])
        assert imgs.shape == (12, px, px, 3)
        # Smooth like real lesions, not confetti: the mean step between neighbouring pixels stays within 2x that of
        # real images of the same source (a few grey levels; uniform noise gives about 85).
        dx = np.abs(np.diff(imgs.astype(float), axis=2)).mean()
        assert dx < 2 * dx_real, (dx, dx_real)
        assert json.loads((out / "generation.json").read_text())["model_hash"] == res["model_hash"]
