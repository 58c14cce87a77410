"""The runs of an experiment: one `train_classifier` call per (arm, replicate) in its own folder, then its held-out
predictions. A finished run is reused, so an interrupted experiment resumes; runs may train in worker processes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..classify.folders import TrainedClassifier
from ..errors import ConfigError
from .replicates import Replicate


def baseline_spec(name: str) -> dict:
    """Training options and post-hoc flag of the real-only method `name`."""
    from ..classify.methods import METHODS

    if name not in METHODS:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(METHODS)}")
    m = METHODS[name]
    if m.base:  # a post-hoc method trains its base method; τ is tuned on the inner val split
        base = METHODS[m.base]
        return {"loss": base.loss, "sampler": base.sampler, "train_kw": dict(base.train_kw), "posthoc": True}
    return {"loss": m.loss, "sampler": m.sampler, "train_kw": dict(m.train_kw), "posthoc": False}


@dataclass(frozen=True)
class RunPlan:
    """What every run of one experiment shares: its folder, the data, the common training recipe and the other
    source its models are also read on."""

    out: Path
    data: object
    common: dict
    eval_data: object = None
    eval_split: str = "test"
    eval_splits: object = None

    def task(self, key: str, rep: Replicate, *, posthoc: bool, **train) -> dict:
        """The run of arm (or method) KEY on replicate REP: its folder OUT/runs/KEY/<tag> and its recipe."""
        return {"run_dir": str(self.out / "runs" / key / rep.tag), "rep": rep, "data": self.data,
                "train": {**self.common, **train}, "posthoc": posthoc, "eval_data": self.eval_data,
                "eval_split": self.eval_split, "eval_splits": self.eval_splits}

    def pending(self, tasks: list[dict]) -> list[dict]:
        """The tasks whose predictions (on the reported part, and on the other source when given) are missing."""
        from .predictions import PREDICTIONS

        def saved(t: dict, part: str) -> bool:
            return (Path(t["run_dir"]) / PREDICTIONS.format(part=part)).is_file()

        return [t for t in tasks if (t["rep"].reported and not saved(t, "test"))
                or (self.eval_data and not saved(t, "eval"))]


def train_pending(todo: list[dict], *, jobs: int, log, collect_only: bool) -> None:
    """Train TODO, or with COLLECT_ONLY say which runs the tables will lack."""
    if collect_only:
        for t in todo:
            log(f"  {t['run_dir']}: not finished, left out of the tables")
        return
    run_tasks(todo, jobs, log)


def run_one(task: dict, log=print) -> dict:
    """One run: train (unless finished), then predictions on the replicate's test part and on the eval source."""
    from ..classify.train import train_classifier
    from .predictions import PREDICTIONS, predict_part, save_predictions, tune_posthoc_tau

    run = Path(task["run_dir"])
    rep: Replicate = task["rep"]
    t0 = time.time()
    if not TrainedClassifier(run).is_evaluated():
        log(f"  training {run} ...")
        train_classifier(task["data"], run, seed=rep.seed, splits=rep.manifest, **task["train"])
    tau = None
    if task["posthoc"]:
        tau, _ = tune_posthoc_tau(run, task["data"], rep.manifest)
    test_file = run / PREDICTIONS.format(part="test")
    if rep.reported and not test_file.is_file():
        save_predictions(run, "test", predict_part(run, task["data"], "test", rep.manifest), tau)
    if task.get("eval_data") and not (run / PREDICTIONS.format(part="eval")).is_file():
        pred = predict_part(run, task["eval_data"], task["eval_split"], task.get("eval_splits"), drop_unknown=True)
        save_predictions(run, "eval", pred, tau)
    return {"run_dir": str(run), "wall_s": round(time.time() - t0, 1), "posthoc_tau": tau}


def run_tasks(tasks: list[dict], jobs: int, log) -> list[dict]:
    if jobs <= 1 or len(tasks) <= 1:
        return [run_one(t, log) for t in tasks]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    log(f"training {len(tasks)} runs in {jobs} worker processes")
    # spawn: a forked torch process can deadlock in its thread pool.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
        return [f.result() for f in [ex.submit(run_one, t, print) for t in tasks]]
