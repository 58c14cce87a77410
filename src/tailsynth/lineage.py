"""Lineage: from a served prediction back to the synthetic images that shaped the model.

Chain: model version (every prediction record carries it) -> exported model card (found under the run folders)
-> classifier run (model folder, training config) -> synthetic set (DVC revision, recorded in the card and in the
run's record, `runinfo.RUN_FILE`) -> synthesizer (weights hash, its own card) -> real data revision; then every
synthetic image of the set with its generation provenance row (the candidate set's manifest,
`diffusion.candidate_set`).

Each link is checked against the bytes where they are still at hand (`verified` fields), so a chain that prints is
a chain that holds. What export writes into the model card is `tailsynth.classify.provenance.model_lineage`;
`trace` follows a card back.
"""

from __future__ import annotations

import json
from pathlib import Path

from .cards import CARD_JSON, CARD_MD, check_card
from .classify.folders import TrainedClassifier
from .classify.provenance import LineageError
from .diffusion.candidate_set import CandidateSet
from .errors import DataError
from .ood.selection import Selection
from .runinfo import RUN_FILE


# ---- followed back: from a prediction to the images ---------------------------------------------------------
def model_version_of(record_line: str) -> str:
    """The model version in one prediction record (a JSON line from `tailsynth serve --records`)."""
    try:
        rec = json.loads(record_line)
    except ValueError as e:
        raise LineageError(f"prediction record is not JSON ({e}): {record_line[:120]!r}") from None
    v = rec.get("model_version") if isinstance(rec, dict) else None
    if not v:
        raise LineageError(f"prediction record has no model_version field: {record_line[:200]!r}")
    return str(v)


def find_model_card(version: str, roots) -> Path:
    """The exported model card whose version is VERSION, searched under each folder of ROOTS."""
    seen, stale = 0, None
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        for p in sorted(root.rglob(CARD_JSON)):
            seen += 1
            try:
                card = json.loads(p.read_text())
            except ValueError:
                continue
            if card.get("version") != version or card.get("kind") == "synthesizer":
                continue
            # The same weights exported again (a re-run into the same folder keeps its older runs' artifacts) may
            # sit beside a card of an older schema: the current card wins; only when none is current is that an
            # error naming the schema the old card lacks.
            try:
                check_card(card, p)
            except DataError as err:
                stale = stale or err
                continue
            return p
    if stale is not None:
        raise stale
    where = ", ".join(str(r) for r in roots)
    raise LineageError(f"no exported model card with version {version} under {where} ({seen} cards looked at); "
                       "pass --runs with the folder holding the run that exported it")


def _run_dir_of(path: Path) -> Path | None:
    for cand in path.resolve().parents:
        if (cand / RUN_FILE).is_file():
            return cand
    return None


def _image_id(file: Path) -> str:
    """Candidate id of a selected image: `<id>.png`, or `<nnnnnn>_<id>.png` once the selection carries its images."""
    stem = file.stem
    head, _, rest = stem.partition("_")
    return rest if rest and head.isdigit() and len(head) == 6 else stem


def synthetic_images(selected: Path, candidates: Path | None) -> dict[str, list[dict]]:
    """{class: [{"file", "sha256", **provenance row}]} for every image of the synthetic set."""
    from .hashing import file_digest

    prov, cs = {}, CandidateSet(candidates) if candidates is not None else None
    if cs is not None:
        if not cs.manifest_path.is_file():
            raise LineageError(f"{cs.manifest_path}: manifest not found")
        prov = {r["id"]: r for r in cs.rows()}
    out: dict[str, list[dict]] = {}
    for e in Selection(selected).entries(check_images=True):
        f = e.path
        entry = {"file": str(f.relative_to(selected)) if f.is_relative_to(selected) else str(f),
                 "sha256": file_digest(f)}
        if prov:
            iid = _image_id(f)
            if iid not in prov:
                raise LineageError(f"{f}: candidate id {iid!r} has no row in {cs.manifest_path}")
            p = prov[iid]
            if p.get("class") != e.cls:
                raise LineageError(f"{f}: class {e.cls} in the selection but {p.get('class')} at generation")
            src = cs.image_path(iid)
            entry["same_bytes_as_candidate"] = src.is_file() and file_digest(src) == entry["sha256"]
            entry.update(p)
        out.setdefault(e.cls, []).append(entry)
    return out


def trace(record: str | None = None, model_version: str | None = None, runs=("runs",)) -> dict:
    """Follow a prediction record (or a model version) back to its data; see the module docstring."""
    from .data.versioning import VersioningError, data_revision, dvc_md5, run_versions

    if (record is None) == (model_version is None):
        raise ValueError("give exactly one of a prediction record or a model version")
    version = model_version or model_version_of(record)
    card_path = find_model_card(version, runs)
    card = json.loads(card_path.read_text())
    lin = card.get("lineage")
    if not lin:
        raise LineageError(f"{card_path}: model card has no lineage block (exported before lineage was recorded)")
    run_dir = _run_dir_of(card_path)
    chain: dict = {"model": {"version": version, "card": str(card_path),
                             "card_markdown": str(card_path.with_name(CARD_MD))},
                   "classifier_run": {**lin["classifier"], "run_dir": str(run_dir) if run_dir else None}}
    versions = {}
    if run_dir is not None:
        try:
            versions = run_versions(run_dir)
        except VersioningError:
            versions = {}
    sets = versions.get("sets") or {}

    mdir = Path(lin["classifier"]["model_dir"])
    if TrainedClassifier(mdir).has_model():
        from .hashing import model_version as version_of

        chain["classifier_run"]["verified"] = version_of(mdir) == version

    syn = lin.get("synthetic_set")
    if syn:
        entry = {**syn}
        recorded = sets.get("synthetic") or {}
        entry["run_yaml_revision"] = recorded.get("md5")
        entry["dvc_file"] = str(run_dir / recorded["dvc_file"]) if recorded.get("dvc_file") and run_dir else None
        entry["remote"] = (versions.get("remote") or {}).get("url")
        selected = Path(syn["uri"])
        entry["verified"] = selected.is_dir() and dvc_md5(selected) == syn["dvc_md5"]
        chain["synthetic_set"] = entry
        chain["selection"] = lin.get("selection")
        synth = dict(lin.get("synthesizer") or {})
        recorded_synth = (run_versions_record(run_dir) or {}).get("synthesizer") or {}
        if not synth.get("uri") and recorded_synth.get("hash") == synth.get("hash"):
            synth["uri"] = recorded_synth.get("uri")
        if synth.get("uri") and Path(synth["uri"]).is_dir():
            from .diffusion.model import META_FILE, model_hash

            synth["verified"] = model_hash(synth["uri"]) == synth["hash"]
            # A shipped synthesizer carries its model card; one trained inside the run has only its metadata.
            card = next((Path(synth["uri"]) / n for n in (CARD_MD, CARD_JSON, META_FILE)
                         if (Path(synth["uri"]) / n).is_file()), None)
            meta_path = Path(synth["uri"]) / META_FILE
            synth["card"] = str(card) if card else None
            synth["card_summary"] = _synth_summary(meta_path) if meta_path.is_file() else None
        chain["synthesizer"] = synth or None
        cands = (lin.get("selection") or {}).get("candidates")
        if selected.is_dir():
            chain["images"] = synthetic_images(selected, Path(cands) if cands and Path(cands).is_dir() else None)
    else:
        chain["synthetic_set"] = None
        chain["synthesizer"] = None
        chain["images"] = {}

    real = {**lin["training_data"]}
    rec_real = sets.get("real") or {}
    real["dvc_md5"] = rec_real.get("md5")
    real["run_yaml_content_revision"] = rec_real.get("content_revision")
    real["verified"] = bool(rec_real) and rec_real.get("content_revision") == real.get("revision")
    src = real.get("source")
    if src and Path(src).exists() and not real["verified"]:
        real["verified"] = data_revision(src) == real.get("revision")
    chain["real_data"] = real
    return chain


def run_versions_record(run_dir: Path | None) -> dict:
    """The whole version stage entry of RUN_DIR/RUN_FILE (revisions, synthesizer, candidates), {} when absent."""
    from .data.versioning import VERSION_STAGE
    from .runinfo import read_run

    if run_dir is None:
        return {}
    return ((read_run(run_dir).get("stages") or {}).get(VERSION_STAGE)) or {}


def _synth_summary(meta_path: Path) -> dict:
    meta = json.loads(meta_path.read_text())
    return {k: meta.get(k) for k in ("size", "resolution", "step", "steps_planned", "classes", "init_from") if k in meta}


def format_chain(chain: dict, max_images: int | None = None) -> str:
    """The chain as plain text, one link per paragraph, then every synthetic image with its provenance."""
    m, c = chain["model"], chain["classifier_run"]
    ok = {True: "verified", False: "NOT VERIFIED", None: "not checked"}
    lines = [f"model version      {m['version']}", f"  model card       {m['card']}",
             f"classifier run     {c.get('run_dir') or '(run folder not found)'}",
             f"  model folder     {c['model_dir']} ({ok[c.get('verified')]})",
             f"  training         {c.get('backbone')} loss={c.get('loss')} epochs={c.get('epochs')} seed={c.get('seed')}"]
    s = chain.get("synthetic_set")
    if s:
        lines += [f"synthetic set      DVC {s['dvc_md5']} ({ok[s.get('verified')]}; {RUN_FILE} {s.get('run_yaml_revision')})",
                  f"  files            {s['uri']} ({s['n_images']} images)",
                  f"  .dvc file        {s.get('dvc_file')} -> remote {s.get('remote')}"]
        sel = chain.get("selection") or {}
        lines.append("  selection        " + ", ".join(f"{k}={sel.get(k)}" for k in ("score", "gamma", "calibrate")
                                                       if k in sel))
        syn = chain.get("synthesizer") or {}
        lines += [f"synthesizer        {syn.get('hash')} ({ok[syn.get('verified')]})",
                  f"  model folder     {syn.get('uri')}", f"  model card       {syn.get('card')}"]
        if syn.get("card_summary"):
            lines.append("  summary          " + ", ".join(f"{k}={v}" for k, v in syn["card_summary"].items()))
    else:
        lines.append("synthetic set      none: this model was trained on real data only")
    r = chain["real_data"]
    lines += [f"real data          {r.get('revision')} ({ok[r.get('verified')]})",
              f"  DVC              {r.get('dvc_md5')}", f"  source           {r.get('source')}"]
    for cls, imgs in sorted((chain.get("images") or {}).items()):
        lines.append(f"synthetic images of {cls}: {len(imgs)}")
        for e in imgs[:max_images] if max_images else imgs:
            prov = ", ".join(f"{k}={e[k]}" for k in ("id", "background_id", "background_class", "mask_source",
                                                      "seed", "sampler", "steps", "guidance", "model_hash") if k in e)
            lines.append(f"  {e['file']}  sha256 {e['sha256'][:12]}  {prov}")
    return "\n".join(lines)
