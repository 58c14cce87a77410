"""Class vocabularies: ISIC 2019 names are the platform's canonical labels."""

from __future__ import annotations

# Column order of the official ISIC 2019 ground-truth CSV.
ISIC2019_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")

# The tail classes whose recall the product exists to lift, rarest first (the order generation, gates and tables
# use): the one definition that profiles, CMO, the experiment tables, the synthesizer gates and the monitor's
# policy file (k8s/monitor/monitor.yaml, checked by tests/data/test_vocabulary.py) follow.
TAIL_CLASSES: tuple[str, ...] = ("DF", "VASC", "AK")

# MedMNIST label index -> HAM10000 code (dermamnist.npz label order).
MEDMNIST_CODES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

HAM_TO_ISIC: dict[str, str] = {
    "akiec": "AK",
    "bcc": "BCC",
    "bkl": "BKL",
    "df": "DF",
    "mel": "MEL",
    "nv": "NV",
    "vasc": "VASC",
}

CLASS_DESCRIPTIONS: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
    "UNK": "none of the others",
}


def canonical_order(names) -> list[str]:
    """Order a set of class names as in ISIC 2019 (unknown names go last, sorted)."""
    names = set(names)
    known = [c for c in ISIC2019_CLASSES if c in names]
    return known + sorted(names - set(ISIC2019_CLASSES))
