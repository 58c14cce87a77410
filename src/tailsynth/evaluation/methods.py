"""`tailsynth experiment --folds`: real-only long-tail methods on the replicate protocol (epoch and post-hoc τ
chosen on the inner split, reported on held-out folds), paired Δ vs the first method. The winner by mean balanced
accuracy is the augmentation experiment's arm (a)."""

from __future__ import annotations

from pathlib import Path

from ..data.classes import TAIL_CLASSES
from ..errors import ConfigError
from .replicates import Replicate, make_replicates
from .results import COMPARISON_TABLE, collect, write_results
from .runs import RunPlan, baseline_spec, train_pending
from .tables import render_markdown


def _only(reps: list[Replicate], only_folds) -> list[Replicate]:
    """The replicates of the fold numbers ONLY_FOLDS (None: all)."""
    if only_folds is None:
        return reps
    wanted = {f"fold{int(i)}" for i in only_folds}
    unknown = wanted - {r.group for r in reps}
    if unknown:
        raise ConfigError(f"only_folds: no replicate {sorted(unknown)} (have {sorted({r.group for r in reps})})")
    return [r for r in reps if r.group in wanted]


def run_method_comparison(data, out, methods, *, folds: int | None = 5, seeds=(0,), backbone: str = "resnet18",
                          epochs: int | None = None, resolution: int | None = None, splits=None,
                          inner_val: float = 0.15, split_seed: int = 0, eval_data=None, eval_split: str = "test",
                          eval_splits=None, tail=TAIL_CLASSES, n_boot: int = 1000, train_kw: dict | None = None,
                          quiet: bool = False, jobs: int = 1, collect_only: bool = False,
                          only_folds=None) -> dict:
    """Train (or, with collect_only, only gather) every method on every replicate; write the results
    (`results.RESULTS_FILE`) and COMPARISON_TABLE. `only_folds` (fold numbers): train and tabulate only those folds
    (a staged protocol's first stage)."""
    methods = list(methods)
    if not methods:
        raise ConfigError("no methods to compare")
    specs = {m: baseline_spec(m) for m in methods}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    reps = _only(make_replicates(data, out, folds=folds, seeds=[int(s) for s in seeds], splits=splits,
                                 inner_val=inner_val, split_seed=split_seed), only_folds)
    common = {"backbone": backbone, "epochs": epochs, "resolution": resolution, "split_seed": split_seed,
              "quiet": True, "write_reports": False, **(train_kw or {})}
    plan = RunPlan(out, data, common, eval_data, eval_split, eval_splits)
    todo = plan.pending([plan.task(m, r, posthoc=specs[m]["posthoc"], loss=specs[m]["loss"],
                                   sampler=specs[m]["sampler"], **specs[m]["train_kw"])
                         for r in reps for m in methods])
    if not collect_only:
        log(f"{len(methods)} methods x {len(reps)} replicates: {len(todo)} runs to train")
    train_pending(todo, jobs=jobs, log=log, collect_only=collect_only)
    results = collect(out, methods, reps, tail=list(tail), n_boot=n_boot, eval_data=eval_data is not None,
                      ref=methods[0], contrasts=(), rule=False)
    arms = results["parts"].get("test", {}).get("arms", {})
    results["best"] = max(arms, key=lambda k: arms[k]["balanced_accuracy"]["mean"] or -1) if arms else None
    results["config"] = {"data": str(data), "methods": methods, "folds": folds, "seeds": [int(s) for s in seeds],
                         "only_folds": None if only_folds is None else [int(i) for i in only_folds],
                         "inner_val": inner_val, "tail": list(tail), "n_boot": n_boot,
                         "eval_data": str(eval_data) if eval_data else None, "eval_split": eval_split,
                         **{k: v for k, v in common.items() if k not in ("quiet", "write_reports")}}
    md = render_markdown(results, ref_label=methods[0])
    md = f"Best by mean balanced accuracy on the held-out part: **{results['best']}**\n\n" + md
    table = write_results(out, results, COMPARISON_TABLE, md)
    return {"results": results, "table_path": str(table), "best": results["best"]}
