"""Per-class drift tests for one window against the reference, with family-wise error control.

Why these choices:
- Per class, the window holds few rows (a tail class may have ten), so every per-column test is the
  two-sample Kolmogorov-Smirnov test: exact for small samples, no binning, and the test Evidently itself
  picks for numerical columns with <= 1000 reference rows (its p-values equal these; tests check that).
- Prediction share per class is a count: Fisher's exact test on the 2x2 table (class / not class x
  reference / window), valid at any count, plus an effect-size floor so that huge windows do not flag
  clinically meaningless share changes.
- One window runs ~100 tests (7 classes x ~13 columns + shares). Holm's step-down correction keeps the
  chance that an i.i.d. window flags anything at all below `alpha`, with more power than Bonferroni.
- Column tests need `min_samples` rows of the class on both sides; below that the class is reported as
  "insufficient" rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..predictions import IMAGE_STAT_COLUMNS as IMAGE_COLUMNS


@dataclass
class DriftSettings:
    alpha: float = 0.01  # family-wise false-alarm rate per window (hourly windows: ~1 false alarm in 100)
    min_samples: int = 10  # rows of a class needed on both sides for its column tests
    group_by: str = "auto"  # "predicted" (no labels needed), "label" (labelled feedback), "auto" (label if all have one)
    share_min_ratio: float = 1.25  # a share change must also be at least this factor (either way)
    recall_drop: float = 0.10  # labelled feedback: absolute recall drop that matters
    confidence: bool = True
    embedding: bool = True
    image_stats: Sequence[str] = field(default_factory=lambda: list(IMAGE_COLUMNS))


def ks_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(a, b)[1])


def share_pvalue(k_cur: int, n_cur: int, k_ref: int, n_ref: int) -> float:
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k_cur, n_cur - k_cur], [k_ref, n_ref - k_ref]])[1])


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj


def drift_columns(df, settings: DriftSettings) -> list[str]:
    cols = []
    if settings.confidence and "confidence" in df:
        cols.append("confidence")
    if settings.embedding:
        cols += sorted((c for c in df.columns if c.startswith("emb_")), key=lambda c: int(c[4:]))
    cols += [c for c in settings.image_stats if c in df]
    return cols


def evaluate_window(ref, cur, classes: Sequence[str], settings: DriftSettings | None = None) -> dict:
    """Per-class drift verdicts for window CUR against reference REF (frames from records.records_frame)."""
    s = settings or DriftSettings()
    if s.group_by not in ("auto", "predicted", "label"):
        raise ConfigError(f"group_by must be 'auto', 'predicted' or 'label', not {s.group_by!r}")
    labelled = bool(len(cur)) and cur["label"].notna().all() and ref["label"].notna().all()
    if s.group_by == "label" and not labelled:
        raise ConfigError("group_by='label' needs a label on every reference and window record")
    # auto: labelled feedback, when complete, says which class an image really belongs to
    key = "label" if s.group_by == "label" or (s.group_by == "auto" and labelled) else "predicted"
    cols = [c for c in drift_columns(cur, s) if c in ref]
    has_labels = labelled
    n_ref, n_cur = len(ref), len(cur)

    tests: list[tuple[str, str, float]] = []  # (class, test name, raw p)
    classes_out: dict[str, dict] = {}
    for c in classes:
        r, w = ref[ref[key] == c], cur[cur[key] == c]
        share_ref, share_cur = len(r) / max(n_ref, 1), len(w) / max(n_cur, 1)
        info = {"n_ref": len(r), "n_cur": len(w), "share_ref": round(share_ref, 5), "share_cur": round(share_cur, 5),
                "tests": {}, "status": "ok"}
        tests.append((c, "share", share_pvalue(len(w), n_cur, len(r), n_ref)))
        if len(r) >= s.min_samples and len(w) >= s.min_samples:
            for col in cols:
                a, b = r[col].to_numpy(float), w[col].to_numpy(float)
                a, b = a[~np.isnan(a)], b[~np.isnan(b)]
                if len(a) < s.min_samples or len(b) < s.min_samples:
                    continue  # the column is missing from these records (e.g. no embedding logged)
                if np.all(a == a[0]) and np.all(b == a[0]):
                    continue  # the same constant on both sides (e.g. image size): nothing to test
                tests.append((c, col, ks_pvalue(a, b)))
        else:
            info["status"] = "insufficient"
        if has_labels:
            rl, wl = ref[ref["label"] == c], cur[cur["label"] == c]
            if len(rl) >= s.min_samples and len(wl) >= s.min_samples:
                rec_ref = float((rl["predicted"] == c).mean())
                rec_cur = float((wl["predicted"] == c).mean())
                info["recall_ref"], info["recall_cur"] = round(rec_ref, 4), round(rec_cur, 4)
                from scipy.stats import fisher_exact

                k_r, k_w = int((rl["predicted"] == c).sum()), int((wl["predicted"] == c).sum())
                p = float(fisher_exact([[k_r, len(rl) - k_r], [k_w, len(wl) - k_w]], alternative="greater")[1])
                tests.append((c, "recall", p))
        classes_out[c] = info

    adj = holm([t[2] for t in tests])
    for (c, name, p), pa in zip(tests, adj):
        info = classes_out[c]
        info["tests"][name] = {"p": float(p), "p_adj": float(pa), "drift": bool(pa < s.alpha)}
    for c, info in classes_out.items():
        t = info["tests"]
        share = t.get("share")
        ratio = (info["share_cur"] + 1e-9) / (info["share_ref"] + 1e-9)
        info["share_drift"] = bool(share and share["drift"] and max(ratio, 1 / ratio) >= s.share_min_ratio)
        col_drift = sorted(n for n, v in t.items() if n not in ("share", "recall") and v["drift"])
        info["drifted_columns"] = col_drift
        info["confidence_drift"] = "confidence" in col_drift
        info["embedding_drift"] = any(n.startswith("emb_") for n in col_drift)
        info["image_drift"] = any(n in IMAGE_COLUMNS for n in col_drift)
        rec = t.get("recall")
        info["recall_drop"] = bool(rec and rec["drift"]
                                   and info["recall_ref"] - info["recall_cur"] >= s.recall_drop)
        info["drift"] = bool(info["share_drift"] or col_drift)
        info["min_p_adj"] = float(min((v["p_adj"] for v in t.values()), default=1.0))
        if info["drift"] or info["recall_drop"]:
            info["status"] = "drift"
    return {"n_ref": n_ref, "n_cur": n_cur, "group_by": key, "alpha": s.alpha, "n_tests": len(tests),
            "correction": "holm", "classes": classes_out,
            "flagged": [c for c in classes if classes_out[c]["drift"] or classes_out[c]["recall_drop"]]}
