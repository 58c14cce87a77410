"""The monitor's submitters (see `tailsynth.monitor.policy.Submitter`): regenerate_tail through KFP's local
runner or through kfp.Client. The CLI picks one from `--trigger`; the library never imports this module."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tailsynth.errors import ConfigError
from tailsynth.monitor.policy import DryRun, MonitorConfig, check_trigger_arguments

_DATA_ARGUMENTS = ("source", "data_revision")
_MODEL_ARGUMENTS = ("diffusion_model_uri", "feature_classifier_uri", "current_model_uri")


@dataclass
class KfpClientSubmitter:
    """Submit the committed compiled regenerate_tail to `trigger.host` with kfp.Client."""

    mode: str = "kfp"
    required_arguments: tuple[str, ...] = _DATA_ARGUMENTS

    def __call__(self, classes: list[str], window: str, cfg: MonitorConfig) -> dict:
        from .submit import submit

        t = cfg.trigger
        if not t.host:
            raise ConfigError("trigger.host is not set (the Kubeflow Pipelines endpoint for --trigger kfp)")
        args = check_trigger_arguments(cfg, self.required_arguments)
        source, revision = args.pop("source"), args.pop("data_revision")
        run_id = submit(host=t.host, source=source, data_revision=revision, pipeline="regenerate_tail",
                        token=os.environ.get(t.token_env), namespace=t.namespace, experiment=t.experiment,
                        run_name=f"regenerate-tail-{window}"[:120], classes=classes, **args)
        return {"status": "submitted", "run_id": run_id, "host": t.host}


@dataclass
class LocalRunnerSubmitter:
    """Run regenerate_tail with KFP's local SubprocessRunner in this Python environment (models by local URI)."""

    mode: str = "local"
    required_arguments: tuple[str, ...] = _DATA_ARGUMENTS + _MODEL_ARGUMENTS

    def __call__(self, classes: list[str], window: str, cfg: MonitorConfig) -> dict:
        from kfp import local

        from .regenerate_tail import regenerate_tail

        args = check_trigger_arguments(cfg, self.required_arguments)
        root = Path(cfg.trigger.pipeline_root or "runs/regenerate").resolve()
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
        regenerate_tail(classes=classes, **args)
        return {"status": "succeeded", "run_id": f"local:{root}", "pipeline_root": str(root)}


SUBMITTERS = {"none": None, "dry-run": DryRun, "local": LocalRunnerSubmitter, "kfp": KfpClientSubmitter}


def submitter_for(mode: str):
    """The submitter for a --trigger MODE (None for 'none')."""
    if mode not in SUBMITTERS:
        raise ConfigError(f"--trigger {mode!r}: expected one of {', '.join(SUBMITTERS)}")
    factory = SUBMITTERS[mode]
    return factory() if factory is not None else None
