from __future__ import annotations

import numpy as np

from tailsynth.formatting import MISSING, fmt


def test_one_number_format():
    assert fmt(None) == MISSING and fmt(float("nan")) == MISSING and fmt(np.float32("nan")) == MISSING
    assert fmt(0.123456) == "0.123" and fmt(np.float32(0.5), 4) == "0.5000"
    assert fmt(0.000123456, 4, general=True) == "0.0001235"
    assert fmt(7) == "7" and fmt(np.int64(7)) == "7" and fmt(True) == "True" and fmt("resnet18") == "resnet18"


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    """Library plots draw on their own Figure: a caller's backend (a notebook's, say) is not switched."""
    import matplotlib

    from tailsynth.classify.report import plot_recall_bars

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        m = {"classes": ["NV", "DF"], "per_class": {"NV": {"recall": 0.9, "support": 9}, "DF": {"recall": 0.2, "support": 1}},
             "balanced_accuracy": 0.55, "split": "val"}
        plot_recall_bars(m, tmp_path / "r.png")
        assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
