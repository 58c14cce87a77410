"""The model card of a shipped synthesizer (tailsynth.cards schema): what it was trained on, how long, by which
recipe, how good it is (the quality-gate figures, its metrics) and the exact commands that reproduce it; `ship`
writes the weights and the card together. `upgrade_card` rewrites a card of the older synthesizer-only schema
(tailsynth-synthesizer-card/1) into this one, field for field (tools/upgrade_model_cards.py). `regate` puts newly
measured gates into a shipped synthesizer's card, for the very weights they were measured on."""

from __future__ import annotations

import csv
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from ..cards import make_card, write_card
from ..formatting import fmt
from ..pages import Section
from .model import read_meta, ship_weights

INTENDED_USE = ("research only: synthetic tail-class lesions for classifier training experiments; not for diagnosis, "
                "not a source of clinical images")
OLD_SCHEMA = "tailsynth-synthesizer-card/1"
WEIGHTS_FORMAT = {"weights": "safetensors, fp16 (EMA)", "architecture": "diffusers UNet2DModel + DDPMScheduler",
                  "conditioning": "class label, inpainting mask"}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU" if cpu else f"{os.cpu_count()} CPU cores"


def _io(resolution: int) -> tuple[dict, dict]:
    """(inputs, outputs) of a synthesizer at RESOLUTION px."""
    px = [int(resolution), int(resolution)]
    inputs = {"background": {"dtype": "uint8", "layout": "HWC", "shape": [*px, 3], "meaning": "real skin image"},
              "mask": {"dtype": "bool", "shape": px, "meaning": "where the lesion is painted"},
              "class": {"dtype": "str", "meaning": "the lesion class to paint (one of classes)"}}
    outputs = {"image": {"dtype": "uint8", "layout": "HWC", "shape": [*px, 3],
                         "meaning": "the background with a synthetic lesion of the class inside the mask"}}
    return inputs, outputs


def _synth_card(fields: dict, weights: dict, created: str | None, changelog: dict | None) -> dict:
    """The one schema's card from a synthesizer's FIELDS (build_card's or an old card's) and its WEIGHTS info."""
    fields = dict(fields)
    metrics = {k: fields.pop(k) for k in ("gates", "gates_all_pass") if k in fields}
    data = fields.pop("data")
    revision = data.get("revision") or (f"sha256:{data['sha256']}" if data.get("sha256") else None)
    inputs, outputs = _io(fields["resolution"])
    version = weights["weights_hash"]
    return make_card("synthesizer", fields.pop("name"), version, format=WEIGHTS_FORMAT,
                     intended_use=fields.pop("intended_use", INTENDED_USE), inputs=inputs, outputs=outputs,
                     classes=fields.pop("classes"), data_revision=revision, metrics=metrics,
                     changelog=changelog or {version: "shipped"}, created=created, data=data,
                     **weights, **fields)


def _training_folder(model_dir) -> Path:
    """MODEL_DIR, checked to be a training folder of `train diffusion` (a shipped folder has no config or loss log:
    its card is re-gated with `regate`, not re-shipped)."""
    from ..errors import ConfigError

    model_dir = Path(model_dir)
    missing = [f for f in ("config.json", "loss.csv") if not (model_dir / f).is_file()]
    if missing:
        raise ConfigError(f"{model_dir}: not a training folder of `train diffusion` ({', '.join(missing)} missing); "
                          f"to put new gates into a shipped synthesizer's card use `regate-synthesizer`")
    return model_dir


def _card_fields(model_dir, name: str, quality: dict | None = None, commands: list[str] | None = None,
                 notes: list[str] | None = None) -> dict:
    """What a trained model's folder (and its gates' QUALITY) says about it."""
    from ..hashing import file_digest

    model_dir = _training_folder(model_dir)
    meta = read_meta(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    rows = list(csv.reader((model_dir / "loss.csv").read_text().splitlines()))[1:]
    wall = float(rows[-1][3]) if rows else None
    source = Path(cfg["data"])
    card = {
        "name": name,
        "intended_use": INTENDED_USE,
        "data": {"source": source.name, "sha256": file_digest(source) if source.is_file() else None,
                 # a folder source (HAM10000, ISIC) is named by the project's content-hash revision
                 "revision": meta["data"].get("revision"),
                 "split": "train (the val split is never seen)", "train_counts": meta["data"].get("train_counts")},
        "classes": meta["classes"],
        "resolution": meta["resolution"],
        "size": meta["size"],
        "steps": meta["step"],
        "batch_size": cfg["batch_size"],
        "images_seen": int(meta["step"]) * int(cfg["batch_size"]) * int(cfg.get("grad_accum", 1)),
        "train_wall_s": wall,
        "machine": _machine(),
        "recipe": {k: cfg[k] for k in ("prediction_type", "beta_schedule", "snr_gamma", "timestep_sampling",
                                       "class_sampling", "null_prob", "real_mask_prob", "outside_weight", "lr",
                                       "warmup", "min_lr_frac", "weight_decay", "ema_decay", "ema_half_life_frac",
                                       "seed") if k in cfg},
        "commands": commands or [],
        "notes": notes or [],
    }
    if quality:
        card.update(_gate_fields(quality))
    return card


def build_card(model_dir, name: str, weights: dict, quality: dict | None = None, commands: list[str] | None = None,
               notes: list[str] | None = None) -> dict:
    """The card of MODEL_DIR's synthesizer shipped with WEIGHTS ({weights_hash, weights_mb, parameters})."""
    return _synth_card(_card_fields(model_dir, name, quality, commands, notes), weights, None, None)


def ship(model_dir, dest, name: str, quality: dict | None = None, commands: list[str] | None = None,
         notes: list[str] | None = None, max_mb: float = 8.0) -> dict:
    """Ship MODEL_DIR's EMA weights (fp16 safetensors, at most MAX_MB) into DEST with their model card
    (model_card.json and model_card.md); returns the card."""
    weights = ship_weights(_training_folder(model_dir), dest, max_mb)
    card = build_card(model_dir, name, weights, quality, commands, notes)
    write_card(dest, card, card_sections(card))
    return card


def _gate_fields(quality: dict) -> dict:
    """The card's gate fields from a `synth-quality` record."""
    return {"gates": quality["gates"], "gates_all_pass": quality["all_pass"], "gate_classifier": quality["classifier"],
            "gate_settings": {k: quality["config"][k] for k in ("strength", "sampler", "steps", "guidance",
                                                                "gate_backbone", "gate_epochs", "gate_seeds")}}


def regate(shipped, quality: dict, commands: list[str] | None = None, notes: list[str] | None = None,
           when: str | None = None) -> dict:
    """Put QUALITY's gates (a `synth-quality` record) into the card of the synthesizer shipped in SHIPPED, with the
    COMMANDS that measured them and NOTES added; the weights are untouched. The gates must have been measured on
    these very weights (the record's model hash), else nothing is written. Returns the new card."""
    from ..cards import read_card
    from ..errors import ConfigError
    from .model import model_hash

    shipped = Path(shipped)
    card = read_card(shipped)
    if card is None or card.get("kind") != "synthesizer":
        raise ConfigError(f"{shipped}: no shipped synthesizer's card there")
    weights = model_hash(shipped)
    if quality.get("model_hash") != weights:
        raise ConfigError(f"{shipped}: the gates were measured on weights {quality.get('model_hash')!r} "
                          f"({quality.get('model')}), not on these ({weights}); nothing written")
    gates = _gate_fields(quality)
    card["metrics"] = {**card["metrics"], "gates": gates.pop("gates"), "gates_all_pass": gates.pop("gates_all_pass")}
    card.update(gates)
    card["commands"] = list(card.get("commands", [])) + list(commands or [])
    card["notes"] = list(card.get("notes", [])) + list(notes or [])
    stamp = when or datetime.now(UTC).date().isoformat()
    card["changelog"] = {**card["changelog"],
                         card["version"]: f"{card['changelog'].get(card['version'], 'shipped')}; gates re-measured "
                                          f"{stamp}"}
    write_card(shipped, card, card_sections(card))
    return card


def upgrade_card(old: dict, created: str | None = None) -> dict:
    """A card of the synthesizer-only schema (tailsynth-synthesizer-card/1) in the one schema, every figure
    carried over as it is; CREATED: when it was first written."""
    if old.get("format") != OLD_SCHEMA:
        raise ValueError(f"not a {OLD_SCHEMA} card (format {old.get('format')!r})")
    fields = {k: v for k, v in old.items() if k not in ("format", "weights_hash", "weights_mb", "parameters")}
    weights = {k: old[k] for k in ("weights_hash", "weights_mb", "parameters")}
    changelog = {old["weights_hash"]: f"shipped (card first written as {OLD_SCHEMA})"}
    return _synth_card(fields, weights, created, changelog)


GATE_HEADER = ["mode", "class", "label fidelity", "real", "ratio", "TOS recall", "real-trained", "ratio", "FD syn",
               "FD real val", "n syn / real", "memorized"]


def _counts(g: dict) -> str:
    """Candidates / real images a gate was measured on (records before `--min-count` had one count for both)."""
    return f"{g['n_synthetic']} / {g.get('n_real', g.get('n'))}" if "n_synthetic" in g else str(g.get("n"))


def _gate_rows(card: dict) -> list[list]:
    rows = []
    for mode, per in card["metrics"]["gates"].items():
        for c, g in per.items():
            rows.append([mode, c, fmt(g.get("label_fidelity")), fmt(g.get("label_fidelity_real")),
                         f"{fmt(g.get('label_fidelity_ratio'))} {'pass' if g.get('label_fidelity_pass') else 'FAIL'}",
                         fmt(g.get("tos_recall")), fmt(g.get("real_recall")),
                         f"{fmt(g.get('tos_ratio'))} {'pass' if g.get('tos_pass') else 'FAIL'}",
                         fmt(g.get("fd_synthetic")), fmt(g.get("fd_real_val")), _counts(g),
                         fmt(g.get("memorized_fraction"))])
    return rows


def card_sections(card: dict) -> list[Section]:
    """A synthesizer's own sections of its card (after the common ones of tailsynth.cards)."""
    facts = [[k, ", ".join(card[k]) if isinstance(card[k], list) else str(card[k])]
             for k in ("weights_hash", "weights_mb", "parameters", "size", "resolution", "steps", "batch_size",
                       "images_seen", "train_wall_s", "machine") if k in card]
    d = card["data"]
    facts.append(["data", f"{d['source']} ({d['split']}), sha256 {d.get('sha256')}"])
    recipe = [[k, str(v)] for k, v in card["recipe"].items()]
    sections: list[Section] = [("Synthesizer", "facts", [["item", "value"], facts]),
                               ("Recipe", "facts", [["setting", "value"], recipe])]
    if card["metrics"].get("gates"):
        s = card["gate_settings"]
        settings = (f"Sampler {s['sampler']}, {s['steps']} steps, guidance {s['guidance']}; harmonize strength "
                    f"{s['strength']}. Label fidelity under the real-only classifier `{card['gate_classifier']}`; "
                    f"train-on-synthetic (TOS) classifiers: {s['gate_backbone']}, {s['gate_epochs']} epochs, seeds "
                    f"{s['gate_seeds']}. Targets: label fidelity >= 0.8 x real, TOS recall >= 0.7 x real-trained.")
        sections += [("Quality gates", "text", [settings]), ("", "table", [GATE_HEADER, _gate_rows(card)])]
    if card.get("notes"):
        sections.append(("Notes", "list", card["notes"]))
    if card.get("commands"):
        sections.append(("Reproduce", "code", ["\n".join(card["commands"])]))
    return sections
