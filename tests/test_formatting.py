from __future__ import annotations

import numpy as np

from tailsynth.formatting import MISSING, fmt


def test_one_number_format():
    assert fmt(None) == MISSING and fmt(float("nan")) == MISSING and fmt(np.float32("nan")) == MISSING
    assert fmt(0.123456) == "0.123" and fmt(np.float32(0.5), 4) == "0.5000"
    assert fmt(0.000123456, 4, general=True) == "0.0001235"
    assert fmt(7) == "7" and fmt(np.int64(7)) == "7" and fmt(True) == "True" and fmt("resnet18") == "resnet18"
