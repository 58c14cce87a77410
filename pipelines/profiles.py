"""Named parameter sets for train_augment: tiny (tests), cpu (the main job, under 8 min on 2 cores), ham (HAM10000 at
64 px with its expert masks), paper (GPU cluster).

A profile holds every pipeline parameter except `source` and `data_revision`, which come from the data.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, List

from tailsynth.data.classes import TAIL_CLASSES
from tailsynth.data.splits import check_train_fraction
from tailsynth.errors import ConfigError

_COMMON = {
    "seed": 0,
    "max_per_class": 0,
    "val_fraction": 0.15,
    "test_fraction": 0.15,
    # A stratified share of the train split to train on, in (0, 1] (the split stage; val/test untouched): scaling
    # studies (benchmarks/bench_mainjob.py) and quick runs. Unlike max_per_class it keeps the class proportions.
    "train_fraction": 1.0,
    "backbone": "resnet18",
    # "imagenet": the backbone's ImageNet weights from the package that ships them (tailsynth.classify.pretrained);
    # "": trained from scratch.
    "pretrained": "",
    # The classifier's numeric precision: fp32, bf16 or auto (measured per machine; tailsynth.classify.precision).
    "precision": "fp32",
    "loss": "ce",
    "eval_split": "val",
    "eval_bootstrap": 200,
    "policy": "fill-to-head",
    "oversample": 2.0,
    "generate_mode": "inpaint",
    "strength": 0.5,
    "sampler": "ddim",
    "guidance": 2.0,
    "gamma": 0.5,
    "calibrate": 0.0,
    "ood_score": "mahalanobis",
    # The floor under the selection rule (tailsynth.ood.floor): a candidate is kept only if its OOD score is within
    # this quantile of its class's real held-out images (and it passes the floor's other tests); 0 = no floor.
    "floor_quantile": 0.95,
    # The synthesizer gate before generation (tailsynth.ood.synth_gate): warn (a failing class trains real-only),
    # require (a failing class fails the run) or off; gate_probe candidates per class and mode are judged.
    "synth_gate": "warn",
    "gate_probe": 24,
    "synthetic_ratio": 0.0,
    # The synthetic images' loss weight (x their manifest weight) and dose (tailsynth.classify.samplers.EpochPlan):
    # "replace" (synthetic draws displace real ones) or "add" (they come on top of a real-only epoch, synthetic_ratio
    # being their share of a tail class's draws; the prior-shift control then replays that many real draws).
    "synthetic_weight": 1.0,
    "synthetic_dose": "replace",
    # > 0: the cleaning rule selects instead of the gamma keep fraction (tailsynth.ood.clean: not confidently, at
    # this probability, another class; inside the prototype band [1, 2] d_c; not memorized), above the floor.
    "clean_confidence": 0.0,
    # The classifier's re-sampler (none | class-balanced | sqrt), the same for every arm of a run.
    "classifier_sampler": "none",
    "export_target": "local",
    "dvc_remote": "",
    # A shipped synthesizer (a path; relative paths are taken from the working directory, the repository root
    # for `make run`); "" trains one inside the run. A fine-tune of > 0 minutes starts from the shipped one.
    "diffusion_model": "",
    # Its weights' hash (tailsynth.diffusion.model.model_hash; local runs fill it in from diffusion_model). A path
    # alone would key the synthesizer's task on its name: with the hash, new weights at the same path change the
    # cache key of that task and of every task downstream of it. train-diffusion refuses weights that do not match.
    "diffusion_model_hash": "",
    "diffusion_finetune_minutes": 0.0,
    # The export rule (tailsynth.evaluation.promotion): "" serves the synthetic arm when it is not worse on the run's
    # own split; a path to the decisive experiment's results record serves it only when that experiment's
    # pre-registered rule says it helps on its own folds (relative paths: from the working directory).
    "serve_evidence": "",
}
SHIPPED_SYNTHESIZER = "models/synth-dermamnist"

PROFILES: dict[str, dict] = {
    # Seconds per stage: a few hundred 28 px images, one epoch, a 16 px diffusion model trained a handful of steps.
    "tiny": {**_COMMON,
             "max_per_class": 30,
             "epochs": 1, "resolution": 28, "batch_size": 32, "eval_bootstrap": 20,
             "diffusion_size": "tiny", "diffusion_resolution": 16, "diffusion_steps": 4,
             "diffusion_batch_size": 8, "diffusion_max_minutes": 0.0,
             "classes": ["DF", "VASC"], "policy": "fixed", "count": 4, "oversample": 1.0,
             "sampler_steps": 3, "num_shards": 2, "gamma": 0.5},
    # The main job on DermaMNIST (7,007 train images, 28 px) on 2 CPU cores: classifiers ~1.5 min each, the shipped
    # synthesizer copied in (seconds), 180 candidates, ~2 min of task start-up (torch imports).
    "cpu": {**_COMMON,
            # The experiment's recipe (native 28 px, 10 epochs): no upsampling, so an epoch costs ~25% less than
            # at 32 px and the arms here are the arms of docs/results/augmentation_experiment.md.
            "epochs": 10, "resolution": 28, "batch_size": 128,
            # Arm (a): the best real-only method of the resnet18 long-tail comparison (5-fold CV, 10 epochs):
            # CE + class-balanced sampler, BA 0.587 vs 0.520-0.532 for the loss-based methods
            # (docs/results/classifier_comparison.md).
            "classifier_sampler": "class-balanced",
            # The shipped synthesizer (trained once, 6,000 steps x 64 images, see its model_card.md) instead of
            # minutes of training inside every run; its lesions are what the rest of the run is judged on.
            "diffusion_model": SHIPPED_SYNTHESIZER,
            "diffusion_size": "lean", "diffusion_resolution": 28, "diffusion_steps": 6000,
            "diffusion_batch_size": 64, "diffusion_max_minutes": 0.0,
            "classes": list(TAIL_CLASSES), "count": 60, "oversample": 1.0,
            # The shipped synthesizer's sampler, chosen on label fidelity (docs/results/diffusion.md).
            "sampler": "dpmsolver", "sampler_steps": 20, "guidance": 3.0,
            # One shard: on one 2-core machine the local runner runs ParallelFor shards at the same time and their
            # torch threads oversubscribe the cores (measured: 26 s once, 138 s another time for the same 180
            # images). The cluster profile (paper) fans out over GPU pods.
            "num_shards": 1, "gamma": 0.5},
    # HAM10000 at 64 px (`pipeline run --local --profile ham`; the local runner picks ../shared/data/ham10000):
    # lesion-grouped splits, the data set's expert masks, resnet18 at 64 px with the real-only recipe of
    # docs/results/classifier_comparison_ham.md, and the 64 px synthesizer with the lean 64 px recipe.
    "ham": {**_COMMON,
            # Stage 1 of that comparison (2026-12-07): resnet18 from scratch beat ImageNet-pretrained
            # EfficientNet-Lite0 (BMA 0.595 vs 0.522 on folds 0-1), and 12 epochs beat 6 by 0.019. precision auto:
            # fp32 (+ channels_last where faster) training, bf16 inference where the CPU has it. Loss and sampler:
            # stage 2's winner, CE + class-balanced sampler (mean BMA 0.588 over 5 lesion-grouped folds vs 0.533-
            # 0.579 for mixup, cRT, balanced softmax, DRW, post-hoc; docs/results/classifier_comparison_ham.md).
            "epochs": 12, "resolution": 64, "batch_size": 128, "precision": "auto",
            "loss": "ce", "classifier_sampler": "class-balanced",
            # The shipped 64 px synthesizer (models/synth-ham64, its card has the gates), not minutes of training
            # from scratch inside the run: those painted coloured static (see check_synthesizer_budget).
            "diffusion_model": "models/synth-ham64",
            "diffusion_size": "lean64", "diffusion_resolution": 64, "diffusion_steps": 3000,
            "diffusion_batch_size": 64, "diffusion_max_minutes": 0.0,
            "classes": list(TAIL_CLASSES), "count": 60, "oversample": 1.0,
            "sampler": "dpmsolver", "sampler_steps": 20, "guidance": 3.0,
            "num_shards": 1, "gamma": 0.5,
            # Promote the synthetic arm only when the decisive HAM10000 experiment's rule says it helps on its own
            # lesion-grouped folds (docs/results/augmentation_experiment_ham.md); until then real-only is served.
            "serve_evidence": "docs/results/augmentation_ham"},
    # ISIC 2019 at full scale on a GPU pool: fill-to-head synthesis, gamma 0.4, 16 generation shards.
    "paper": {**_COMMON,
              "backbone": "efficientnet_b0", "epochs": 30, "resolution": 128, "batch_size": 128,
              "eval_split": "test", "eval_bootstrap": 1000,
              "diffusion_size": "base", "diffusion_resolution": 64, "diffusion_steps": 50000,
              "diffusion_batch_size": 64, "diffusion_max_minutes": 0.0,
              "classes": ["DF", "VASC", "AK", "SCC"], "policy": "fill-to-head", "count": 0, "oversample": 2.5,
              "sampler_steps": 50, "num_shards": 16, "gamma": 0.4, "export_target": "cluster",
              "dvc_remote": "storage"},
}


# The pipelines' signature defaults: what a bare cluster submission or the KFP UI starts from.
DEFAULT_PROFILE = "cpu"
DEFAULTS = PROFILES[DEFAULT_PROFILE]

# What the shared generate -> select -> retrain -> evaluate sub-pipeline takes from a profile.
SYNTHESIS_PARAMETERS = ("classes", "policy", "count", "oversample", "generate_mode", "strength", "sampler",
                        "sampler_steps", "guidance", "num_shards", "gamma", "calibrate", "ood_score", "floor_quantile",
                        "synth_gate", "gate_probe", "clean_confidence", "backbone",
                        "pretrained", "precision",
                        "loss", "classifier_sampler", "epochs", "resolution", "batch_size", "seed", "synthetic_ratio", "synthetic_weight",
                        "synthetic_dose", "eval_split",
                        "eval_bootstrap")


def parameter_type(name: str) -> type:
    """The KFP type of profile parameter NAME, from its value in the default profile."""
    value = DEFAULTS[name]
    return List[str] if isinstance(value, list) else type(value)


def pipeline_parameters(required: dict[str, Any], shared: Sequence[str],
                        extra: dict[str, tuple[type, Any]] | None = None, defaults: bool = True) -> Callable:
    """Give a pipeline body `def f(**p)` its KFP signature: REQUIRED parameters (name -> type), then EXTRA ones
    (name -> (type, default)), then the profile parameters SHARED, typed and (with DEFAULTS) defaulted from the
    default profile. One list of parameters, the profiles, instead of one per pipeline."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(n, kind, annotation=t) for n, t in required.items()]
    params += [inspect.Parameter(n, kind, annotation=t, default=d) for n, (t, d) in (extra or {}).items()]
    params += [inspect.Parameter(n, kind, annotation=parameter_type(n),
                                 **({"default": copy.deepcopy(DEFAULTS[n])} if defaults else {})) for n in shared]

    def wrap(body: Callable) -> Callable:
        signature = inspect.Signature(params, return_annotation=inspect.signature(body).return_annotation)

        @functools.wraps(body)
        def pipeline(*args, **kwargs):  # KFP passes one channel per parameter, positionally
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return body(**bound.arguments)

        pipeline.__signature__ = signature
        return pipeline

    return wrap


# Accepted ranges of the numeric parameters: (low, high, low excluded, high excluded); None is no bound. A value
# outside fails before a run starts (and before the run record says `running`), not as a crash inside some task.
RANGES: dict[str, tuple] = {
    "seed": (0, None, False, False), "max_per_class": (0, None, False, False),
    "val_fraction": (0, 1, True, True), "test_fraction": (0, 1, False, True), "train_fraction": (0, 1, True, False),
    "eval_bootstrap": (0, None, False, False), "oversample": (0, None, True, False), "strength": (0, 1, True, False),
    "guidance": (0, None, False, False), "gamma": (0, 1, True, False), "calibrate": (0, 1, False, False),
    "synthetic_ratio": (0, 1, False, False), "diffusion_finetune_minutes": (0, None, False, False),
    "epochs": (1, None, False, False), "resolution": (8, None, False, False), "batch_size": (1, None, False, False),
    "diffusion_resolution": (8, None, False, False), "diffusion_steps": (1, None, False, False),
    "diffusion_batch_size": (1, None, False, False), "diffusion_max_minutes": (0, None, False, False),
    "count": (0, None, False, False), "sampler_steps": (1, None, False, False), "num_shards": (1, None, False, False),
    "floor_quantile": (0, 1, False, False), "gate_probe": (2, None, False, False),
    "synthetic_weight": (0, None, False, False), "clean_confidence": (0, 1, False, True),
}


def _choices(name: str) -> tuple | None:
    """The accepted values of a named-choice parameter, from the library module that defines them (imported only
    when that parameter is overridden: some of them import torch); None for free-form parameters."""
    if name == "loss":
        from tailsynth.classify.losses import LOSSES
        return LOSSES
    if name == "classifier_sampler":
        from tailsynth.classify.samplers import CLASS_SAMPLERS
        return CLASS_SAMPLERS
    if name == "precision":
        from tailsynth.classify.precision import PRECISIONS
        return PRECISIONS
    if name == "pretrained":
        from tailsynth.classify.pretrained import PRETRAINED_CHOICES
        return ("", *PRETRAINED_CHOICES)
    if name == "ood_score":
        from tailsynth.ood.scores import OOD_SCORES
        return OOD_SCORES
    if name in ("policy", "sampler", "generate_mode"):
        from tailsynth.diffusion import generate as g
        return {"policy": g.POLICIES, "sampler": g.SAMPLERS, "generate_mode": g.MODES}[name]
    if name == "diffusion_size":
        from tailsynth.diffusion.model import SIZES
        return tuple(SIZES)
    if name == "synth_gate":
        from tailsynth.ood.synth_gate import GATE_POLICIES
        return GATE_POLICIES
    if name == "synthetic_dose":
        from tailsynth.classify.samplers import DOSES
        return tuple(d for d in DOSES if d != "replay")  # replay is the control's dose, chosen by the pipeline
    if name == "export_target":
        return ("local", "cluster")
    if name == "eval_split":
        return ("val", "test")
    return None


def _interval(name: str) -> str:
    lo, hi, lo_open, hi_open = RANGES[name]
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _in_range(name: str, value: float) -> bool:
    lo, hi, lo_open, hi_open = RANGES[name]
    if value != value:  # noqa: PLR0124 - NaN is in no range
        return False
    if lo is not None and (value <= lo if lo_open else value < lo):
        return False
    return not (hi is not None and (value >= hi if hi_open else value > hi))


def _expected(name: str) -> str:
    """What parameter NAME accepts, in words (for its error)."""
    t = parameter_type(name)
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(t, "a list of names")
    if name in RANGES:
        kind += " " + _interval(name)
    choices = _choices(name)
    if choices:
        kind = "one of " + ", ".join(repr(c) for c in choices)
    if t is List[str]:
        kind += ", e.g. [DF,VASC] or DF,VASC"
    return kind


def _typed(name: str, value: Any) -> Any:
    """VALUE as parameter NAME's type, or None when it is not one. YAML-parsed --set values arrive as int, float,
    bool, str, list or None (an empty `--set KEY=`)."""
    t = parameter_type(name)
    if t is bool:
        return value if isinstance(value, bool) else None
    if t is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if t is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if t is str:
        if value is None:  # `--set diffusion_model=`: the empty string
            return ""
        return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    if isinstance(value, str):  # List[str]: "DF,VASC"
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and value and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    return None


def check_parameter(name: str, value: Any) -> Any:
    """VALUE converted to profile parameter NAME's type, checked against its range or choices; a ConfigError naming
    the parameter and what it accepts otherwise."""
    typed = _typed(name, value)
    ok = typed is not None
    if ok and name in RANGES:
        ok = _in_range(name, typed)
    choices = _choices(name) if ok else None
    if ok and choices is not None:
        ok = typed in choices
    if not ok:
        raise ConfigError(f"{name} must be {_expected(name)}, got {value!r}")
    return typed


def check_overrides(name: str, overrides: dict) -> dict:
    """OVERRIDES of profile NAME, each converted and checked (`check_parameter`); unknown keys are a ConfigError that
    lists the known ones."""
    known = PROFILES[name]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"profile {name!r}: unknown parameter(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    return {k: check_parameter(k, v) for k, v in overrides.items()}


def profile(name: str, **overrides) -> dict:
    """The parameters of profile NAME with OVERRIDES applied; unknown keys and values of the wrong type or out of
    range are a ConfigError (before any task runs)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    p = copy.deepcopy(PROFILES[name])
    p.update(check_overrides(name, overrides))
    # Checked here too, so a bad value fails before the first task instead of inside the split stage.
    p["train_fraction"] = check_train_fraction(p["train_fraction"])
    check_synthesizer_budget(name, p)
    check_synthetic_recipe(name, p)
    p["profile"] = name
    return p


def check_synthetic_recipe(name: str, p: dict) -> None:
    """The selection rule and the dose fit together: the cleaning rule replaces the gamma keep fraction but not a
    calibrate quantile (one rule at a time), and the additive dose needs the synthetic share it adds."""
    if p["clean_confidence"] > 0 and p["calibrate"] > 0:
        raise ConfigError(f"profile {name!r}: clean_confidence={p['clean_confidence']:g} and calibrate="
                          f"{p['calibrate']:g} are two selection rules; set one of them to 0")
    if p["synthetic_dose"] == "add" and not 0 < p["synthetic_ratio"] < 1:
        raise ConfigError(f"profile {name!r}: synthetic_dose='add' needs synthetic_ratio in (0, 1) (the synthetic "
                          f"share of a tail class's draws), got {p['synthetic_ratio']:g}")


# The smallest training budget of a shipped synthesizer whose card shows its gates (models/synth-ham64: 3,000 steps
# x 64 images); a run that trains its own synthesizer must give at least that, uncapped in minutes.
MIN_SCRATCH_STEPS = 3000


def check_synthesizer_budget(name: str, p: dict) -> None:
    """A profile either uses a shipped synthesizer (its hash is checked when the run starts) or trains one with at
    least MIN_SCRATCH_STEPS steps and no wall-clock cap: minutes of training from scratch paint static (issue of
    2026-12-07), and only `tiny`, which tests the plumbing, may do that."""
    if p["diffusion_model"] or name == "tiny":
        return
    if p["diffusion_steps"] < MIN_SCRATCH_STEPS or p["diffusion_max_minutes"] > 0:
        raise ConfigError(
            f"profile {name!r}: trains its synthesizer from scratch with diffusion_steps={p['diffusion_steps']} and "
            f"diffusion_max_minutes={p['diffusion_max_minutes']:g}; a synthesizer trained from scratch needs "
            f"diffusion_steps >= {MIN_SCRATCH_STEPS} and diffusion_max_minutes=0 (no cap), or name a shipped one "
            f"with diffusion_model=models/<name>")
