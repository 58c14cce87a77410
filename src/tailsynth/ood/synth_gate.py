"""The synthesizer gate inside a pipeline run: before candidates are generated at scale, a probe of a few per tail
class and mode is generated and judged; a class whose probe fails is not synthesized in that run (policy `warn`:
it trains on real images only, and the run says so) or stops the run (policy `require`).

Two gates per class, both against the same class's real held-out images under the real-only classifier:
- **label-fidelity**: mean p(intended) of the probe vs mean p(true class) of the real images, ratio >= 0.8 (the
  shipped synthesizer cards' gate, `gates.label_fidelity`);
- **in-distribution**: the share of the probe that passes the selection floor (`floor`) vs the share of real
  images that pass it, ratio >= MIN_FLOOR_SHARE_RATIO. Label fidelity alone can pass static that the classifier
  happens to put in the class; static does not pass the floor.

The gate's folder: OUT/synth_gate.json (GATE_FORMAT) and OUT/probe/ (the probe's candidate set).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.errors import DataError
from ..errors import ConfigError
from .floor import Floor, apply_floor

GATE_FILE = "synth_gate.json"
PROBE_DIR = "probe"
GATE_FORMAT = "tailsynth.synth-gate/1"
GATE_POLICIES = ("warn", "require", "off")
MIN_FLOOR_SHARE_RATIO = 0.25
GATE_NAMES = ("label-fidelity", "in-distribution")


class SynthesizerGateError(DataError):
    """A profile that requires the gate met a class that fails it."""


def check_policy(policy: str) -> str:
    if policy not in GATE_POLICIES:
        raise ConfigError(f"synth_gate {policy!r}: choose one of {', '.join(GATE_POLICIES)}")
    return policy


def class_verdicts(sc, fr) -> dict[str, dict]:
    """Per probed class: both gates' figures and the names of the gates it fails."""
    from .gates import LABEL_FIDELITY_RATIO, label_fidelity, ratio
    from .scores import p_intended

    real_p = p_intended(sc.val_probs, sc.val_cls)
    out = {}
    for c in np.unique(sc.cls_idx):
        m = sc.cls_idx == c
        lf = label_fidelity(sc.scores["p_intended"][m], real_p[sc.val_cls == c])
        share, real_share = float(fr.passed[m].mean()), fr.real_pass.get(int(c), math.nan)
        r = ratio(share, real_share)
        v = {"n_probe": int(m.sum()), "label_fidelity": lf["label_fidelity"],
             "label_fidelity_real": lf["label_fidelity_real"], "label_fidelity_ratio": lf["label_fidelity_ratio"],
             "label_fidelity_min_ratio": LABEL_FIDELITY_RATIO, "floor_share": share, "floor_share_real": real_share,
             "floor_share_ratio": r, "floor_share_min_ratio": MIN_FLOOR_SHARE_RATIO}
        v["failed"] = [g for g, ok in zip(GATE_NAMES, (lf["label_fidelity_pass"],
                                                       math.isfinite(r) and r >= MIN_FLOOR_SHARE_RATIO)) if not ok]
        v["passed"] = not v["failed"]
        out[sc.class_names[c]] = v
    return out


@dataclass
class ProbeSettings:
    """How the probe is generated: the run's own generation settings, a few candidates per class."""

    mode: str = "inpaint"
    strength: float = 0.5
    sampler: str = "dpmsolver"
    steps: int = 20
    guidance: float = 2.0
    seed: int = 0
    count: int = 24


def run_synth_gate(model, data, splits, masks, classifier, classes: list[str], out, *, policy: str = "warn",
                   probe: ProbeSettings | None = None, floor: Floor | None = None) -> dict:
    """Probe, judge and write OUT/synth_gate.json; returns the record. `require` raises SynthesizerGateError
    naming each failing class, gate and figure (after the record is written, so the evidence stays)."""
    from ..diffusion.generate import GenerateConfig, generate
    from .select import jsonable, score_candidates

    check_policy(policy)
    probe, floor = probe or ProbeSettings(), floor or Floor()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"format": GATE_FORMAT, "policy": policy, "classes": list(classes), "mode": probe.mode}
    if policy == "off" or not classes:
        record.update(passing=list(classes), failing=[], per_class={}, probe=None)
    else:
        folder = out / PROBE_DIR
        if folder.exists():
            shutil.rmtree(folder)
        generate(GenerateConfig(model=str(model), data=str(data), out=str(folder), classes=list(classes),
                                policy="fixed", count=probe.count, mode=probe.mode, strength=probe.strength,
                                sampler=probe.sampler, steps=probe.steps, guidance=probe.guidance,
                                seed=probe.seed + 7919, masks=str(masks) if masks else None,
                                splits=str(splits) if splits else None))
        sc = score_candidates(folder, data, classifier, splits=splits)
        per_class = class_verdicts(sc, apply_floor(sc, floor))
        record.update(per_class=per_class, probe=vars(probe), floor=floor.settings(),
                      passing=[c for c in classes if per_class.get(c, {}).get("passed")],
                      failing=[c for c in classes if not per_class.get(c, {}).get("passed")])
    (out / GATE_FILE).write_text(json.dumps(jsonable(record), indent=2))
    if policy == "require" and record["failing"]:
        raise SynthesizerGateError(" ; ".join(gate_lines(record, out)))
    return record


def read_gate(folder) -> dict:
    path = Path(folder) / GATE_FILE
    if not path.is_file():
        raise DataError(f"{path}: no synthesizer gate record (written by the synth-gate stage)")
    rec = json.loads(path.read_text())
    if rec.get("format") != GATE_FORMAT:
        raise DataError(f"{path}: format {rec.get('format')!r}, expected {GATE_FORMAT!r}")
    return rec


def gate_lines(record: dict, where=None) -> list[str]:
    """One line per class the gate stopped: which class, which gate, the figures."""
    lines = []
    for c in record.get("failing", []):
        v = record["per_class"].get(c, {})
        figs = []
        if "label-fidelity" in v.get("failed", []):
            figs.append(f"label-fidelity {v['label_fidelity']:.2f} vs real {v['label_fidelity_real']:.2f} "
                        f"(ratio {v['label_fidelity_ratio']:.2f} < {v['label_fidelity_min_ratio']})")
        if "in-distribution" in v.get("failed", []):
            figs.append(f"in-distribution {v['floor_share']:.2f} of the probe pass the floor vs "
                        f"{v['floor_share_real']:.2f} of real images (ratio {v['floor_share_ratio']:.2f} < "
                        f"{v['floor_share_min_ratio']})")
        then = "the run stops" if record["policy"] == "require" else f"{c} trains on real images only"
        lines.append(f"synthesizer gate ({record['mode']}): {c} fails {', '.join(v.get('failed', []))} on "
                     f"{v.get('n_probe', 0)} probe images: {'; '.join(figs)}; {then}")
    return lines
