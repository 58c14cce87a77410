"""The arms of the augmentation experiment, their labels in the tables, and the contrasts the decision rule reads."""

from __future__ import annotations

ARMS = ("real", "cmo", "prior-shift", "random", "ood", "harmonized", "features", "features-real")
# Arms that re-fit (a)'s head on its frozen features instead of training a network (feature_arm.py).
FEATURE_ARMS = ("features", "features-real")
SYNTHETIC_ARMS = ("random", "ood", "harmonized")
ARM_LABELS = {"real": "(a) best real-only", "cmo": "(b) CMO (real tail lesions on head backgrounds)",
              "prior-shift": "(c) prior-shift control (real, (e)'s class draws)",
              "random": "(d) random synthetic, (e)'s counts", "ood": "(e) OOD-selected synthetic",
              "harmonized": "(f) harmonized synthetic, OOD-selected",
              "features": "(g) feature-space synthetic tail, head re-fit",
              "features-real": "(g0) head re-fit on real features (control of (g))"}
# The comparisons the decision rule reads (besides every arm vs (a)).
CONTRASTS = (("ood", "prior-shift"), ("ood", "random"), ("ood", "cmo"), ("harmonized", "prior-shift"),
             ("harmonized", "ood"), ("harmonized", "cmo"), ("features", "features-real"), ("features", "ood"),
             ("features", "harmonized"))
