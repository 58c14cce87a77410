"""The model card of a shipped synthesizer: what it was trained on, how long, by which recipe, how good it is
(the quality-gate figures) and the exact commands that reproduce it. JSON for machines, Markdown for people."""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path

from .model import read_meta


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


def build_card(model_dir, name: str, quality: dict | None = None, commands: list[str] | None = None,
               notes: list[str] | None = None) -> dict:
    from ..hashing import file_digest

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    rows = list(csv.reader((model_dir / "loss.csv").read_text().splitlines()))[1:]
    wall = float(rows[-1][3]) if rows else None
    source = Path(cfg["data"])
    card = {
        "name": name,
        "format": "tailsynth-synthesizer-card/1",
        "intended_use": "research only: synthetic tail-class lesions for classifier training experiments; "
                        "not for diagnosis, not a source of clinical images",
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
        card["gates"] = quality["gates"]
        card["gate_settings"] = {k: quality["config"][k] for k in ("strength", "sampler", "steps", "guidance",
                                                                    "gate_backbone", "gate_epochs", "gate_seeds")}
        card["gate_classifier"] = quality["classifier"]
        card["gates_all_pass"] = quality["all_pass"]
    return card


def _f(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def card_markdown(card: dict) -> str:
    lines = [f"# {card['name']}: class-conditional inpainting synthesizer (model card)", "",
             f"*{card['intended_use']}.*", "",
             "| item | value |", "|---|---|"]
    for k in ("weights_hash", "weights_mb", "parameters", "size", "resolution", "classes", "steps", "batch_size",
              "images_seen", "train_wall_s", "machine"):
        if k in card:
            lines.append(f"| {k} | {card[k] if not isinstance(card[k], list) else ', '.join(card[k])} |")
    d = card["data"]
    lines.append(f"| data | {d['source']} ({d['split']}), sha256 {d.get('sha256')} |")
    lines += ["", "## Recipe", "", "```json", json.dumps(card["recipe"], indent=2), "```", ""]
    if card.get("gates"):
        s = card["gate_settings"]
        lines += ["## Quality gates", "",
                  f"Sampler {s['sampler']}, {s['steps']} steps, guidance {s['guidance']}; harmonize strength "
                  f"{s['strength']}. Label fidelity under the real-only classifier `{card['gate_classifier']}`; "
                  f"train-on-synthetic (TOS) classifiers: {s['gate_backbone']}, {s['gate_epochs']} epochs, seeds "
                  f"{s['gate_seeds']}. Targets: label fidelity >= 0.8 x real, TOS recall >= 0.7 x real-trained.", "",
                  "| mode | class | label fidelity | real | ratio | TOS recall | real-trained | ratio | FD syn | "
                  "FD real val | n | memorized |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for mode, per in card["gates"].items():
            for c, g in per.items():
                lines.append(
                    f"| {mode} | {c} | {_f(g.get('label_fidelity'))} | {_f(g.get('label_fidelity_real'))} | "
                    f"{_f(g.get('label_fidelity_ratio'))} {'pass' if g.get('label_fidelity_pass') else 'FAIL'} | "
                    f"{_f(g.get('tos_recall'))} | {_f(g.get('real_recall'))} | {_f(g.get('tos_ratio'))} "
                    f"{'pass' if g.get('tos_pass') else 'FAIL'} | {_f(g.get('fd_synthetic'))} | "
                    f"{_f(g.get('fd_real_val'))} | {g.get('n')} | {_f(g.get('memorized_fraction'))} |")
        lines.append("")
    if card.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in card["notes"]] + [""]
    if card.get("commands"):
        lines += ["## Reproduce", "", "```bash"] + card["commands"] + ["```", ""]
    return "\n".join(lines)
