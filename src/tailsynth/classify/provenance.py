"""Provenance of a classifier model folder: the data, synthetic set, selection and synthesizer it was trained from.

The classifier stage knows what it was trained on; export writes this block into the model card, and
`tailsynth.lineage` (the report tier) follows a served prediction back through it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..data.errors import DataError


class LineageError(DataError):
    """A link of the chain cannot be followed; the message names the file and field at fault."""


def model_lineage(model_dir: str | Path, meta) -> dict:
    """The lineage block of a classifier's model card (META: the model folder's ClassifierMeta)."""
    from ..data.versioning import dvc_md5
    from ..hashing import data_revision

    cfg = meta.config or {}
    out = {
        "classifier": {"model_dir": str(Path(model_dir).resolve()), "backbone": meta.backbone,
                       "loss": cfg.get("loss"), "epochs": cfg.get("epochs"), "seed": cfg.get("seed"),
                       "selected_epoch": cfg.get("selected_epoch"),
                       # how the synthetic images were dosed (classify.samplers.EpochPlan)
                       "synthetic_dose": cfg.get("synthetic_dose"), "synthetic_ratio": cfg.get("synthetic_ratio"),
                       "synthetic_weight": cfg.get("synthetic_weight")},
        "training_data": {"revision": meta.data_revision, "source": cfg.get("data"),
                          "splits": cfg.get("splits")},
        "synthetic_set": None, "synthesizer": None, "selection": None,
    }
    manifest = cfg.get("synthetic_manifest")
    if not manifest:
        return out
    from ..ood.selection import Selection

    selected = Selection(Path(manifest).parent)
    if not selected.root.is_dir():
        # Still exportable; the card says plainly that this link cannot be checked from here.
        out["synthetic_set"] = {"uri": str(selected.root), "dvc_md5": None, "missing": True}
        return out
    out["synthetic_set"] = {"uri": str(selected.root.resolve()), "dvc_md5": dvc_md5(selected.root),
                            "content_revision": data_revision(selected.root),
                            "n_images": sum(1 for _ in manifest_rows(Path(manifest)))}
    if selected.has_record():
        quality = selected.record()
        sel = dict(quality.get("selection") or {})
        sel["candidates"] = (quality.get("scoring") or {}).get("candidates")
        sel["classifier"] = (quality.get("scoring") or {}).get("classifier")
        out["selection"] = sel
        # No kept image (the synthesizer gate or the floor stopped every candidate): no synthesizer behind it.
        if sel.get("candidates") and out["synthetic_set"]["n_images"]:
            out["synthesizer"] = synthesizer_of(sel["candidates"])
    return out


def synthesizer_of(candidates: str | Path) -> dict:
    """The diffusion model behind a candidate set: its weights hash (from the generation manifest) and folder."""
    from ..diffusion.candidate_set import CandidateSet

    cs = CandidateSet(candidates)
    if not cs.manifest_path.is_file():
        raise LineageError(f"{cs.manifest_path}: manifest not found")
    hashes = cs.model_hashes()
    if len(hashes) != 1:
        raise LineageError(f"{cs.manifest_path}: expected one model_hash, found {hashes}")
    return {"hash": hashes[0], "uri": cs.record().get("model")}


def manifest_rows(path: Path):
    if not path.is_file():
        raise LineageError(f"{path}: manifest not found")
    with open(path, newline="") as f:
        yield from csv.DictReader(f)
