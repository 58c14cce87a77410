"""The decision rule of the augmentation experiment, written down before any run
(docs/results/augmentation_experiment.md)."""

from __future__ import annotations


def _lower(c: dict | None, metric: str = "balanced_accuracy") -> float | None:
    if not c or not c.get("n_replicates"):
        return None
    return c["bootstrap"][metric]["ci95"][0]


def _upper(c: dict | None, metric: str = "balanced_accuracy") -> float | None:
    if not c or not c.get("n_replicates"):
        return None
    return c["bootstrap"][metric]["ci95"][1]


# (arm, its control): the control has everything of the arm except synthesis (the extra real draws for the
# image arms; the head re-fit without synthetic features for (g), amendment of 2026-12-07).
CONTROLS = (("ood", "prior-shift"), ("harmonized", "prior-shift"), ("features", "features-real"))


def decide(part: dict, alpha: float = 0.05) -> dict:
    """The pre-registered verdict for arms (e), (f) and (g) on one evaluation part.

    helps:  Δ balanced accuracy vs (a) has a 95% bootstrap interval above 0, McNemar p < alpha in every seed,
            and Δ vs the arm's control ((c) for (e)/(f), (g0) for (g)) has an interval above 0 (the gain is not
            the extra real draws, or not the head re-fit).
    hurts:  Δ balanced accuracy vs (a) has a 95% interval below 0.
    no detectable effect: anything else.
    Beats CMO: Δ vs (b) interval above 0. Tail gain: pooled AK+DF+VASC recall Δ vs (a) interval above 0.
    """
    verdict = {}
    for arm, control in CONTROLS:
        va = part["vs_real"].get(arm)
        if not va or not va.get("n_replicates"):
            continue
        lo, hi = _lower(va), _upper(va)
        vs_c = part["contrasts"].get(f"{arm} - {control}")
        vs_b = part["contrasts"].get(f"{arm} - cmo")
        beats_control = None if vs_c is None else bool((_lower(vs_c) or 0) > 0)
        helps = lo is not None and lo > 0 and va["mcnemar_p_max"] < alpha and bool(beats_control)
        call = "helps" if helps else "hurts" if (hi is not None and hi < 0) else "no detectable effect"
        verdict[arm] = {
            "verdict": call,
            "delta_balanced_accuracy_vs_a": va["bootstrap"]["balanced_accuracy"],
            "mcnemar_p_max_vs_a": va["mcnemar_p_max"],
            "control": control,
            "beats_control": beats_control,
            "beats_cmo": None if vs_b is None else bool((_lower(vs_b) or 0) > 0),
            "tail_recall_gain": bool((_lower(va, "tail_recall") or 0) > 0),
        }
        if control == "prior-shift":
            verdict[arm]["beats_prior_shift_control"] = beats_control
    return verdict
