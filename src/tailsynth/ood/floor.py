"""The floor under every selection rule: a candidate may be kept only if it looks like a real image of its class.

A keep-fraction or a validation quantile *ranks* candidates; on a synthesizer that paints static it still keeps the
best half of the static. The floor *judges* them, each test measured against the same class's real held-out images
in the real-only classifier's feature space, so that real images of the class pass it and noise does not:

- **out_of_distribution**: the candidate's OOD score (Mahalanobis to the intended class by default) is worse than
  the `quantile` of the same score over the class's real held-out images;
- **other_class**: the classifier puts it in another class with probability >= `confidence` (`clean.confidently_other`);
- **off_prototype**: its distance to the class prototype exceeds `band_hi` x the class's mean real distance
  (the upper edge of the cleaning band, `clean.Prototypes`; the lower edge is a choice about novelty, not
  plausibility, and stays with the cleaning rule);
- **memorized**: a near-copy of a training image (`memorize`).

The rule above the floor (gamma, calibrate, clean) then chooses among the candidates that pass; when fewer pass
than it asks for, fewer are kept and `floor_summary` says so per class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError
from .clean import DEFAULT_BAND, DEFAULT_CONFIDENCE, Prototypes, confidently_other
from .scores import OOD_SCORES, as_ood

FLOOR_REASONS = ("out_of_distribution", "other_class", "off_prototype", "memorized")
DEFAULT_FLOOR_QUANTILE = 0.95


@dataclass(frozen=True)
class Floor:
    """The floor's settings; `Floor()` is the default every selection uses unless told `floor=None`."""

    quantile: float = DEFAULT_FLOOR_QUANTILE
    score: str = "mahalanobis"
    confidence: float = DEFAULT_CONFIDENCE
    band_hi: float = DEFAULT_BAND[1]

    def __post_init__(self):
        if not 0.0 < self.quantile <= 1.0:
            raise ConfigError(f"floor quantile {self.quantile}: must lie in (0, 1]")
        if self.score not in OOD_SCORES:
            raise ConfigError(f"floor score {self.score!r}: choose one of {', '.join(OOD_SCORES)}")
        if not 0.0 < self.confidence <= 1.0:
            raise ConfigError(f"floor confidence {self.confidence}: must lie in (0, 1]")
        if not self.band_hi > 0.0:
            raise ConfigError(f"floor band_hi {self.band_hi}: must be > 0")

    def settings(self) -> dict:
        return asdict(self)


def class_thresholds(real_ood: np.ndarray, real_cls: np.ndarray, quantile: float) -> dict[int, float]:
    """Per class index, the QUANTILE of the OOD score over the class's real held-out images."""
    real_ood, real_cls = np.asarray(real_ood, np.float64), np.asarray(real_cls)
    return {int(c): float(np.quantile(real_ood[real_cls == c], quantile)) for c in np.unique(real_cls)}


def floor_tests(floor: Floor, ood, probs, features, target, memorized, thresholds: dict[int, float],
                prototypes: Prototypes) -> dict[str, np.ndarray]:
    """The four reason masks (True = fails that test) for samples meant to be of class TARGET. A class without
    real held-out images has no threshold: its samples fail `out_of_distribution` (nothing to compare with)."""
    t = np.asarray(target, dtype=np.int64)
    thr = np.array([thresholds.get(int(c), -np.inf) for c in t], dtype=np.float64)
    ood = np.asarray(ood, np.float64)
    dist = prototypes.distance(features, t) if len(t) else np.zeros(0)
    return {"out_of_distribution": ~(ood <= thr),  # NaN scores fail
            "other_class": confidently_other(probs, t, floor.confidence) if len(t) else np.zeros(0, bool),
            "off_prototype": ~(dist <= floor.band_hi * prototypes.spread[t]),
            "memorized": np.asarray(memorized, bool)}


def passes(reasons: dict[str, np.ndarray]) -> np.ndarray:
    return ~np.any(np.stack([reasons[r] for r in FLOOR_REASONS]), axis=0)


def reason_labels(reasons: dict[str, np.ndarray]) -> list[str]:
    """Per sample, the tests it failed joined by '+' ('' when it passes the floor)."""
    n = len(next(iter(reasons.values())))
    return ["+".join(r for r in FLOOR_REASONS if reasons[r][i]) for i in range(n)]


@dataclass
class FloorResult:
    passed: np.ndarray  # per candidate
    reasons: dict[str, np.ndarray]  # per candidate, FLOOR_REASONS
    thresholds: dict[int, float]  # per class index, the OOD threshold
    real_pass: dict[int, float]  # per class index, the share of real held-out images that pass the same floor
    floor: Floor


def apply_floor(sc, floor: Floor) -> FloorResult:
    """The floor on a `select.ScoredCandidates`, and the same floor on the real held-out images it was calibrated
    on (memorization aside): a floor that real images of the class do not pass would be a broken floor."""
    protos = sc.prototypes
    real_ood = as_ood(floor.score, sc.val_scores[floor.score])
    thresholds = class_thresholds(real_ood, sc.val_cls, floor.quantile)
    reasons = floor_tests(floor, as_ood(floor.score, sc.scores[floor.score]), sc.probs, sc.features, sc.cls_idx,
                          sc.memo.memorized, thresholds, protos)
    real = floor_tests(floor, real_ood, sc.val_probs, sc.val_features, sc.val_cls, np.zeros(len(sc.val_cls), bool),
                       thresholds, protos)
    real_ok = passes(real)
    real_pass = {int(c): float(real_ok[sc.val_cls == c].mean()) for c in np.unique(sc.val_cls)}
    return FloorResult(passes(reasons), reasons, thresholds, real_pass, floor)


def floor_summary(sc, fr: FloorResult | None, kept: np.ndarray, quota: dict[int, int] | None,
                  requested: dict[str, int] | None = None) -> dict:
    """Per class: requested (the generation plan), generated, passing the floor, asked for by the rule (its
    quota, where it has one), kept, the shortfall, the rejections by reason, and the real held-out pass rate."""
    out = {}
    for c in np.unique(sc.cls_idx):
        m = sc.cls_idx == c
        name = sc.class_names[c]
        n_pass = int((m & fr.passed).sum()) if fr else int(m.sum())
        entry = {"requested": (requested or {}).get(name), "generated": int(m.sum()), "passing_floor": n_pass,
                 "asked": (quota or {}).get(int(c)), "kept": int((m & kept).sum())}
        entry["short"] = max(0, entry["asked"] - entry["kept"]) if entry["asked"] is not None else None
        if fr is not None:
            entry["rejected"] = {r: int((m & fr.reasons[r]).sum()) for r in FLOOR_REASONS}
            entry["ood_threshold"] = fr.thresholds.get(int(c))
            entry["real_pass_rate"] = fr.real_pass.get(int(c))
        out[name] = entry
    return out


def shortfall_lines(per_class: dict, mode: str | None = None) -> list[str]:
    """One terminal line per class whose rule got fewer candidates than it asked for, or none at all."""
    lines = []
    where = f" ({mode})" if mode else ""
    for name, e in per_class.items():
        if e["kept"] == 0:
            lines.append(f"select{where}: {name}: no candidate kept: {e['passing_floor']} of {e['generated']} pass "
                         f"the floor ({_reasons_text(e)}); {name} trains on real images only")
        elif e.get("short"):
            lines.append(f"select{where}: {name}: {e['kept']} kept of {e['asked']} asked for: only "
                         f"{e['passing_floor']} of {e['generated']} pass the floor ({_reasons_text(e)})")
    return lines


def _reasons_text(e: dict) -> str:
    rej = e.get("rejected") or {}
    parts = [f"{r.replace('_', ' ')} {n}" for r, n in rej.items() if n]
    return "rejected: " + ", ".join(parts) if parts else "floor off"
