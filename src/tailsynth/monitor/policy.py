"""Regeneration policy: which drifting classes are tail classes, and triggering `regenerate_tail` for exactly those.

Config (YAML, every key optional; unknown keys are an error naming the key):

    drift:            # tailsynth.monitor.stats.DriftSettings
      alpha: 0.01     # family-wise false-alarm rate per window (Holm over all tests of the window)
      min_samples: 10
      group_by: auto  # auto = label when every record carries one (labelled feedback), else predicted
      share_min_ratio: 1.25
      recall_drop: 0.10
    tail:
      classes: [DF, VASC]     # an explicit list, or
      share_below: 0.05       # classes under this share of the model's training data;
                              # neither: tailsynth.data.classes.TAIL_CLASSES (those the model has)
    trigger:
      pipeline: regenerate_tail
      host: http://ml-pipeline.kubeflow:8888   # for --trigger kfp
      namespace: kubeflow
      experiment: tailsynth-monitor
      pipeline_root: runs/regenerate          # for --trigger local
      arguments: {source: ..., data_revision: ..., diffusion_model_uri: ..., ...}
    audit_log: reports/audit.jsonl            # default: audit.jsonl beside the window folders

Trigger modes: none (decide and log only), dry-run (log what would be submitted), local (KFP local runner),
kfp (kfp.Client against `trigger.host`); the caller passes the matching `Submitter` (see `pipelines.trigger`). A window that already triggered a run is never triggered again:
the audit log is the record of that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

from ..data.classes import TAIL_CLASSES
from ..data.errors import DataError
from ..errors import ConfigError
from .stats import DriftSettings

DEFAULT_TAIL_SHARE = 0.05  # for a model with none of TAIL_CLASSES and no tail.share_below
TRIGGER_MODES = ("none", "dry-run", "local", "kfp")  # what the CLI offers; `pipelines.trigger` maps them


@dataclass
class TriggerSettings:
    pipeline: str = "regenerate_tail"
    host: str | None = None
    namespace: str | None = None
    experiment: str = "tailsynth-monitor"
    token_env: str = "KFP_TOKEN"
    pipeline_root: str | None = None
    arguments: dict = field(default_factory=dict)


@dataclass
class MonitorConfig:
    drift: DriftSettings = field(default_factory=DriftSettings)
    tail_classes: list[str] | None = None  # None: TAIL_CLASSES, unless tail_share_below is set
    tail_share_below: float | None = None
    trigger: TriggerSettings = field(default_factory=TriggerSettings)
    audit_log: str | None = None


def _build(cls, data: dict, where: str):
    known = {f.name for f in fields(cls)}
    bad = sorted(set(data) - known)
    if bad:
        raise DataError(f"{where}: unknown key(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
    return cls(**data)


def load_config(path: str | Path | None = None) -> MonitorConfig:
    if path is None:
        return MonitorConfig()
    from ..configfile import read_mapping

    path = Path(path)
    raw = read_mapping(path, "monitor config")
    bad = sorted(set(raw) - {"drift", "tail", "trigger", "audit_log"})
    if bad:
        raise DataError(f"{path}: unknown key(s) {', '.join(bad)} (known: drift, tail, trigger, audit_log)")
    drift_raw = dict(raw.get("drift") or {})
    drift = _build(DriftSettings, drift_raw, f"{path}: drift")
    tail = raw.get("tail") or {}
    bad = sorted(set(tail) - {"classes", "share_below"})
    if bad:
        raise DataError(f"{path}: tail: unknown key(s) {', '.join(bad)} (known: classes, share_below)")
    cfg = MonitorConfig(drift=drift, tail_classes=tail.get("classes"),
                        tail_share_below=float(tail["share_below"]) if "share_below" in tail else None,
                        trigger=_build(TriggerSettings, dict(raw.get("trigger") or {}), f"{path}: trigger"),
                        audit_log=raw.get("audit_log"))
    if cfg.drift.group_by not in ("auto", "predicted", "label"):
        raise DataError(f"{path}: drift.group_by must be auto, predicted or label (got {cfg.drift.group_by!r})")
    return cfg


def resolve_tail(cfg: MonitorConfig, classes: Sequence[str], train_counts: dict | None,
                 reference_labels: Sequence[str] | None) -> tuple[list[str], str]:
    """(tail classes in the model's class order, where that came from): the config's tail.classes; else, with
    tail.share_below set, the classes under that share of the training (or reference) data; else the platform's
    TAIL_CLASSES among CLASSES (for a model with none of them, the classes under DEFAULT_TAIL_SHARE)."""
    if cfg.tail_classes:
        unknown = [c for c in cfg.tail_classes if c not in classes]
        if unknown:
            raise DataError(f"tail.classes: {', '.join(unknown)} not among the model's classes {', '.join(classes)}")
        return [c for c in classes if c in cfg.tail_classes], "config tail.classes"
    vocabulary = [c for c in classes if c in TAIL_CLASSES]
    if cfg.tail_share_below is None and vocabulary:
        return vocabulary, "tailsynth.data.classes.TAIL_CLASSES"
    share_below = DEFAULT_TAIL_SHARE if cfg.tail_share_below is None else cfg.tail_share_below
    if train_counts:
        counts, basis = {c: float(train_counts.get(c, 0)) for c in classes}, "model training class counts"
    elif reference_labels:
        counts = {c: float(sum(1 for x in reference_labels if x == c)) for c in classes}
        basis = "reference label counts"
    else:
        raise DataError("no tail classes: set tail.classes in the config, or use a model whose config records "
                        "train_class_counts, or a reference with labels")
    total = sum(counts.values()) or 1.0
    tail = [c for c in classes if counts[c] / total < share_below]
    return tail, f"{basis}, share < {share_below:g}"


def _evidence(info: dict, alpha: float) -> dict:
    keep = ("n_ref", "n_cur", "share_ref", "share_cur", "recall_ref", "recall_cur", "min_p_adj")
    ev = {k: info[k] for k in keep if k in info}
    ev["significant_tests"] = {n: {"p": round(t["p"], 8), "p_adj": round(t["p_adj"], 8)}
                               for n, t in info["tests"].items() if t["p_adj"] < alpha}
    return ev


def decide(window: str, verdict: dict, tail: Sequence[str]) -> list[dict]:
    """One decision per class that is flagged (drift or recall drop); regenerate only tail classes."""
    out = []
    for c in verdict["flagged"]:
        info = verdict["classes"][c]
        reasons = [r for r, on in (("share", info["share_drift"]), ("confidence", info["confidence_drift"]),
                                   ("embedding", info["embedding_drift"]), ("image statistics", info["image_drift"]),
                                   ("recall drop", info["recall_drop"])) if on]
        is_tail = c in tail
        out.append({"window": window, "class": c, "tail": is_tail,
                    "action": "regenerate" if is_tail else "none",
                    "reason": ("drift in " + ", ".join(reasons)) + ("" if is_tail else "; head class: no regeneration"),
                    "evidence": _evidence(info, verdict["alpha"])})
    return out


def read_audit(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: audit log line is not JSON ({e.msg})") from e
    return out


def _append(path: Path, entries: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.writelines(json.dumps(e, sort_keys=True) + "\n" for e in entries)


class Submitter(Protocol):
    """Starts a regenerate_tail run for CLASSES of WINDOW; returns at least {"status": ...} (plus run_id etc.).

    The library decides and records; how a run is started (KFP's local runner, kfp.Client, a dry run) is the
    adapter's choice: `pipelines.trigger` holds the KFP ones, and the CLI picks one from --trigger."""

    mode: str
    required_arguments: tuple[str, ...]

    def __call__(self, classes: list[str], window: str, cfg: MonitorConfig) -> dict: ...


@dataclass
class DryRun:
    """Records what would be submitted; starts nothing."""

    mode: str = "dry-run"
    required_arguments: tuple[str, ...] = ()

    def __call__(self, classes: list[str], window: str, cfg: MonitorConfig) -> dict:
        return {"status": "dry-run", "would_submit": {"pipeline": cfg.trigger.pipeline, "classes": classes,
                                                       "arguments": cfg.trigger.arguments}}


def check_trigger_arguments(cfg: MonitorConfig, required: Sequence[str]) -> dict:
    """The regenerate_tail arguments of CFG, with the ones the submitter needs present (else a ValueError)."""
    if cfg.trigger.pipeline != "regenerate_tail":
        raise ConfigError(f"trigger.pipeline {cfg.trigger.pipeline!r}: only regenerate_tail is supported")
    args = dict(cfg.trigger.arguments)
    missing = [k for k in required if not args.get(k)]
    if missing:
        raise ConfigError(f"trigger.arguments lacks {', '.join(missing)} (needed by regenerate_tail)")
    return args


def execute(decisions: list[dict], submitter: Submitter | None, cfg: MonitorConfig, audit_log: str | Path) -> dict:
    """Trigger regeneration for the tail classes among DECISIONS (at most once per window) with SUBMITTER
    (None: decide and log only); log everything."""
    from ..predictions import utc_now

    mode = submitter.mode if submitter is not None else "none"
    audit = Path(audit_log)
    classes = sorted({d["class"] for d in decisions if d["action"] == "regenerate"})
    window = decisions[0]["window"] if decisions else None
    now = utc_now()
    trigger: dict = {"mode": mode, "classes": classes, "pipeline": cfg.trigger.pipeline}
    if not classes:
        trigger["status"] = "nothing to trigger"
    elif submitter is None:
        trigger["status"] = "not triggered (--trigger none)"
    else:
        done = [e for e in read_audit(audit) if e.get("event") == "trigger" and e.get("window") == window
                and e.get("status") in ("submitted", "succeeded")]
        if done and mode != "dry-run":
            trigger.update(status="skipped: already triggered for this window",
                           previous={k: done[-1].get(k) for k in ("time", "mode", "run_id", "classes")})
        else:
            try:
                check_trigger_arguments(cfg, submitter.required_arguments)
                trigger.update(submitter(classes, window, cfg))
            except Exception as e:  # noqa: BLE001 - the failure is evidence too; the report still gets written
                trigger.update(status="failed", error=f"{type(e).__name__}: {e}")
    for d in decisions:
        d["trigger_status"] = trigger["status"] if d["action"] == "regenerate" else "n/a"
    entries = [{"time": now, "event": "decision", "mode": mode, **d} for d in decisions]
    if window is not None:
        entries.append({"time": now, "event": "trigger", "window": window, **trigger})
    _append(audit, entries)
    return trigger
