"""One monitoring window: per-class drift verdicts, Evidently reports, summary.json, index page, policy.

DIR/report.html      the page for people: per-class status table, links to the Evidently reports
DIR/evidently/overall.html   prediction-share drift, data quality (Evidently DataSummaryPreset)
DIR/evidently/<CLASS>.html   flagged and tail classes: confidence, embedding, image-statistics drift (KS)
DIR/summary.json     {"window", "flagged", "classes": {C: {"drift": bool, ...}}, "decisions": [...], "trigger", ...}
INDEX/index.html     every window under INDEX (default: DIR's parent) with its per-class status
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..data.errors import DataError
from ..pages import Cell, Markup, bold, bullets, code, heading, link, page, para, table
from .policy import Submitter


def window_id(records: list[dict]) -> str:
    """Stable id of a window: its time range and a hash of its request ids (same records -> same id)."""
    ts = sorted(r["timestamp"] for r in records)
    h = hashlib.sha256("\n".join(sorted(str(r.get("request_id")) for r in records)).encode()).hexdigest()[:10]
    compact = lambda t: "".join(ch for ch in t[:19] if ch.isdigit())
    return f"{compact(ts[0])}-{compact(ts[-1])}-{h}"


def _project_raw_embeddings(records: list[dict], reference: Path, dims: int) -> None:
    """Serving may log full penultimate features: project them with the reference's PCA."""
    from ..predictions import EMBEDDING_FILE, Embedder

    raw = [r for r in records if r.get("embedding") and len(r["embedding"]) != dims]
    if not raw:
        return
    emb_file = reference.parent / EMBEDDING_FILE
    if not emb_file.is_file():
        raise DataError(f"{reference}: window records carry {len(raw[0]['embedding'])}-dim embeddings but no "
                        f"{EMBEDDING_FILE} beside the reference to project them to {dims} dims")
    emb = Embedder.load(reference.parent.parent)
    proj = emb.transform(np.asarray([r["embedding"] for r in raw], np.float32))
    for r, v in zip(raw, proj):
        r["embedding"] = v.tolist()


def _train_counts(reference: Path) -> dict | None:
    """The training class counts of the model whose MODEL/monitor/ folder holds REFERENCE (None: no model there)."""
    from ..classify.metadata import MODEL_FILE, read_meta

    model_pt = reference.parent.parent / MODEL_FILE
    return read_meta(model_pt).train_class_counts if model_pt.is_file() else None


def _data_quality(records: list[dict], ref_version: str | None) -> dict:
    probs = np.asarray([sum(r["probabilities"].values()) for r in records])
    versions = sorted({r["model_version"] for r in records})
    hashes = [r.get("image_hash") for r in records]
    return {"records": len(records), "model_versions": versions,
            "model_version_matches_reference": ref_version is None or versions == [ref_version],
            "probabilities_not_summing_to_1": int((np.abs(probs - 1) > 1e-3).sum()),
            "duplicate_image_hashes": len(hashes) - len(set(hashes)),
            "without_embedding": sum(1 for r in records if not r.get("embedding")),
            "without_image_stats": sum(1 for r in records if not r.get("image_stats"))}


def _log_integrity(log, cur_recs, ref_recs) -> dict:
    """Lines the readers skipped (torn writes) and the writes the servers counted as failed (their ledgers)."""
    from .records import write_failures

    skipped = getattr(cur_recs, "skipped", [])
    return {"skipped_lines": len(skipped), "skipped_examples": [str(x) for x in skipped[:5]],
            "reference_skipped_lines": len(getattr(ref_recs, "skipped", [])),
            "write_failures": write_failures(log)}


def _integrity_html(dq: dict):
    skipped = dq.get("skipped_lines", 0)
    parts = [f"{skipped} unreadable line(s) skipped in the window's log"
             + (f" (first: {'; '.join(dq.get('skipped_examples', [])[:3])})" if skipped else "")]
    if dq.get("reference_skipped_lines"):
        parts.append(f"{dq['reference_skipped_lines']} in the reference")
    wf = dq.get("write_failures")
    if wf:
        parts.append(f"{wf['failed_writes']} record write(s) failed on the server, {wf['failed_records']} record(s) "
                     f"dropped (last {wf.get('last_failure_at') or '-'}; {', '.join(wf['ledgers'])})")
    return para(f"Log integrity: {'; '.join(parts)}.", cls="integrity")


def _evidently_reports(ref_df, cur_df, verdict: dict, classes, out: Path, key: str) -> dict:
    """Render the same tests with Evidently; returns Evidently's per-class p-values for the summary.

    Each Evidently page embeds its ~4 MB script bundle, so per-class pages are written only for the
    classes given (flagged and tail classes), not for every class of every hourly window."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataSummaryPreset

    from .stats import drift_columns

    ev_dir = out / "evidently"
    ev_dir.mkdir(parents=True, exist_ok=True)
    num = [c for c in drift_columns(cur_df, _settings_for_columns()) if c in ref_df and cur_df[c].notna().any()]
    cat = ["predicted"] + (["label"] if cur_df["label"].notna().all() and ref_df["label"].notna().all() else [])
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    cols = num + cat
    snap = Report([ValueDrift(column="predicted", method="chisquare"), DataSummaryPreset(columns=cols)]).run(
        current_data=Dataset.from_pandas(cur_df[cols], data_definition=dd),
        reference_data=Dataset.from_pandas(ref_df[cols], data_definition=dd))
    snap.save_html(str(ev_dir / "overall.html"))
    # Bonferroni threshold for display: never more lenient than the Holm decision in summary.json.
    thr = verdict["alpha"] / max(verdict["n_tests"], 1)
    pvals: dict[str, dict] = {}
    for c in classes:
        info = verdict["classes"][c]
        tested = [n for n in info["tests"] if n not in ("share", "recall") and n in num]
        if not tested:
            continue
        r, w = ref_df[ref_df[key] == c], cur_df[cur_df[key] == c]
        dd_c = DataDefinition(numerical_columns=tested)
        snap = Report([ValueDrift(column=n, method="ks", threshold=thr) for n in tested]).run(
            current_data=Dataset.from_pandas(w[tested], data_definition=dd_c),
            reference_data=Dataset.from_pandas(r[tested], data_definition=dd_c))
        snap.save_html(str(ev_dir / f"{c}.html"))
        pvals[c] = {m["config"]["column"]: float(m["value"]) for m in snap.dict()["metrics"]}
    return pvals


def _settings_for_columns():
    from .stats import DriftSettings

    return DriftSettings()


def _write_html(summary: dict, out: Path, index_href: str) -> None:
    """OUT/report.html, with a link back to the windows' index at INDEX_HREF (relative to OUT)."""
    def evidently(name: str) -> bool:
        return (out / "evidently" / f"{name}.html").is_file()

    rows, statuses = [], []
    for c, info in summary["classes"].items():
        tests = ", ".join(f"{n} p_adj={t['p_adj']:.2g}" for n, t in info["tests"].items() if t["drift"])
        rows.append([link(f"evidently/{c}.html", c) if evidently(c) else c,
                     "tail" if c in summary["tail_classes"] else "", info["status"], info["n_ref"], info["n_cur"],
                     f"{info['share_ref']:.3f} → {info['share_cur']:.3f}", f"{info['min_p_adj']:.3g}", tests])
        statuses.append(info["status"])
    decisions = [f"{d['class']}: {d['action']} ({d['reason']}; trigger: {d.get('trigger_status', '')})"
                 for d in summary["decisions"]] or ["none"]
    # Link only the Evidently pages that were written (a window built with evidently=False has none). Linked, not
    # framed: each page inlines several MB of plotly, which made this page slow to open.
    pages = [("overall", "prediction-share drift and data quality")] + [
        (c, f"{c}: confidence, embedding and image-statistics drift") for c in summary["classes"]]
    items = [link(f"evidently/{name}.html", label) for name, label in pages if evidently(name)]
    ev = ([heading("Evidently"), bullets(items)] if items else
          [para("No Evidently pages for this window (built without them).")])
    html_page = page(
        f"tailsynth monitor {summary['window']}",
        para(f"{summary['n_cur']} records vs {summary['n_ref']} reference records; classes grouped by ",
             bold(summary["group_by"]), f"; {summary['n_tests']} tests, Holm-corrected at family-wise alpha "
             f"{summary['alpha']}. Flagged: ", bold(", ".join(summary["flagged"]) or "none"),
             f". Tail classes ({summary['tail_basis']}): {', '.join(summary['tail_classes'])}."),
        table(["class", "", "status", "n ref", "n window", "share", "min p_adj", "drifting tests"], rows,
              row_classes=statuses),
        _integrity_html(summary.get("data_quality", {})),
        heading("Decisions"), bullets(decisions),
        para(f"Trigger: {json.dumps(summary['trigger'])}"),
        *ev, nav=[("all windows", index_href)], h1=f"Window {summary['window']}")
    (out / "report.html").write_text(html_page)


def write_index(root: Path) -> Path:
    """ROOT/index.html: one row per window (model version, records, time range, flagged classes, per-class status
    with its Evidently page where one was written), newest first, with a legend of the statuses."""
    rows = []
    summaries = [(s, json.loads(s.read_text())) for s in root.glob("*/summary.json")]
    summaries.sort(key=lambda t: (t[1].get("time_range") or [""])[-1], reverse=True)
    for s, d in summaries:
        win = s.parent
        cells = []
        for c, v in d["classes"].items():
            label = f"{c}: {v['status']}"
            if (win / "evidently" / f"{c}.html").is_file():
                label = link(f"{win.name}/evidently/{c}.html", label)
            cells.append(Cell(label, v["status"]))
        overall = (link(f"{win.name}/evidently/overall.html", "overall")
                   if (win / "evidently" / "overall.html").is_file() else "-")
        version = ", ".join((d.get("data_quality") or {}).get("model_versions") or [])
        t0, t1 = (d.get("time_range") or ["", ""])[:2]
        rows.append([link(f"{win.name}/report.html", d["window"]), str(version), d["n_cur"], f"{t0[:19]} – {t1[:19]}",
                     ", ".join(d["flagged"]) or "-", overall, *cells])
    width = max((len(d["classes"]) for _, d in summaries), default=1)
    header = ["window", "model version(s)", "records", "time range (UTC)", "flagged", "Evidently",
              Cell("per-class status", colspan=width)]
    legend = para(
        "Status per class: ", Markup("<span class='ok'>ok</span>"), " (no test drifted), ",
        Markup("<span class='drift'>drift</span>"), " (a Holm-corrected test drifted), ",
        Markup("<span class='insufficient'>insufficient</span>"), " (too few records to test). Click a window for "
        "its tests and decisions, a class for its Evidently page. ", code("tailsynth lineage --model-version V"),
        " traces a model version back to its training data.")
    path = root / "index.html"
    path.write_text(page("tailsynth monitor windows", legend, table(header, rows, text=True),
                         h1="Monitoring windows"))
    return path


def publish(local_dir: Path, uri: str, endpoint_url: str | None = None) -> list[str]:
    """Upload every file under LOCAL_DIR to the s3:// prefix URI; returns the keys written."""
    from .records import s3_client, split_s3_uri

    bucket, prefix = split_s3_uri(uri)
    client = s3_client(endpoint_url)
    keys = []
    from ..outdir import LOCK_FILE

    # The lock of the window being written (tailsynth.outdir) is this process's, not part of the published index.
    for f in sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name != LOCK_FILE):
        key = "/".join(x for x in (prefix.strip("/"), f.relative_to(local_dir).as_posix()) if x)
        ctype = {".html": "text/html", ".json": "application/json", ".jsonl": "application/x-ndjson"}.get(f.suffix,
                                                                                                     "binary/octet-stream")
        client.upload_file(str(f), bucket, key, ExtraArgs={"ContentType": ctype})
        keys.append(key)
    return keys


def pull_state(uri: str, root: Path, endpoint_url: str | None = None) -> list[str]:
    """Before a run that publishes to URI: fetch the audit log and earlier windows' summary.json, so that the
    index lists every window and a window that already triggered regeneration is not triggered again."""
    from .records import s3_client, split_s3_uri

    bucket, prefix = split_s3_uri(uri)
    prefix = prefix.strip("/")
    client = s3_client(endpoint_url)
    got = []
    for listing in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/" if prefix else ""):
        for obj in listing.get("Contents", []):
            rel = obj["Key"][len(prefix) + 1:] if prefix else obj["Key"]
            if rel == "audit.jsonl" or (rel.endswith("/summary.json") and rel.count("/") == 1):
                dest = root / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(dest))
                got.append(rel)
    return got


def fetch_reference(uri: str, dest: Path, endpoint_url: str | None = None) -> Path:
    """An s3:// reference: download it and the embedding projection beside it into DEST/monitor/."""
    from ..predictions import EMBEDDING_FILE
    from .records import s3_client, split_s3_uri

    bucket, key = split_s3_uri(uri)
    client = s3_client(endpoint_url)
    local = dest / "monitor" / Path(key).name
    local.parent.mkdir(parents=True, exist_ok=True)
    client.download_file(bucket, key, str(local))
    emb_key = key.rsplit("/", 1)[0] + "/" + EMBEDDING_FILE if "/" in key else EMBEDDING_FILE
    from botocore.exceptions import ClientError

    try:
        client.download_file(bucket, emb_key, str(local.parent / EMBEDDING_FILE))
    except ClientError as e:  # optional: only needed when records carry raw penultimate features
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
            raise
    return local


def build_window_report(log: str | Path, reference: str | Path, out: str | Path, submitter: Submitter | None = None,
                 config: str | Path | None = None, window: str | None = None, index: str | Path | None = None,
                 publish_to: str | None = None, evidently: bool = True, endpoint_url: str | None = None) -> dict:
    """Compare the records in LOG (file, folder or s3:// prefix) with REFERENCE (file or s3://); write OUT;
    apply the policy (SUBMITTER starts regeneration runs; None decides and logs only); with PUBLISH_TO (s3://bucket/prefix) sync the index folder there."""
    import tempfile

    from .policy import decide, execute, load_config, resolve_tail
    from .records import read_records, records_frame
    from .stats import evaluate_window

    cfg = load_config(config)
    out = Path(out)
    root = Path(index) if index else out.parent
    root.mkdir(parents=True, exist_ok=True)
    if publish_to:
        pull_state(publish_to, root, endpoint_url=endpoint_url)
    if str(reference).startswith("s3://"):
        reference = fetch_reference(str(reference), Path(tempfile.mkdtemp(prefix="tailsynth-ref-")), endpoint_url)
    reference = Path(reference)
    ref_recs = read_records(reference)
    cur_recs = read_records(log, endpoint_url=endpoint_url)
    if not ref_recs:
        raise DataError(f"{reference}: the reference holds no records")
    if not cur_recs:
        raise DataError(f"{log}: no prediction records in this window")
    classes = list(ref_recs[0]["probabilities"])
    odd = next((r for r in cur_recs if set(r["probabilities"]) != set(classes)), None)
    if odd is not None:
        raise DataError(f"{log}: record {odd.get('request_id')} has classes {sorted(odd['probabilities'])}, the "
                        f"reference has {sorted(classes)}")
    dims = len(ref_recs[0].get("embedding") or [])
    if dims:
        _project_raw_embeddings(cur_recs, reference, dims)
    wid = window or window_id(cur_recs)
    ref_df, cur_df = records_frame(ref_recs, classes), records_frame(cur_recs, classes)
    verdict = evaluate_window(ref_df, cur_df, classes, cfg.drift)
    tail, basis = resolve_tail(cfg, classes, _train_counts(reference),
                               [r["label"] for r in ref_recs if r.get("label")] or None)
    decisions = decide(wid, verdict, tail)
    out.mkdir(parents=True, exist_ok=True)
    audit = Path(cfg.audit_log) if cfg.audit_log else root / "audit.jsonl"
    trig = execute(decisions, submitter, cfg, audit)
    summary = {"window": wid, "log": str(log), "reference": str(reference), "flagged": verdict["flagged"],
               "classes": verdict["classes"], "decisions": decisions, "trigger": trig, "tail_classes": tail,
               "tail_basis": basis, "group_by": verdict["group_by"], "alpha": verdict["alpha"],
               "n_tests": verdict["n_tests"], "correction": verdict["correction"], "n_ref": verdict["n_ref"],
               "n_cur": verdict["n_cur"],
               "time_range": [min(r["timestamp"] for r in cur_recs), max(r["timestamp"] for r in cur_recs)],
               "data_quality": {**_data_quality(cur_recs, ref_recs[0]["model_version"]),
                                **_log_integrity(log, cur_recs, ref_recs)},
               "audit_log": str(audit)}
    if evidently:
        shown = [c for c in classes if c in verdict["flagged"] or c in tail]
        summary["evidently_pvalues"] = _evidently_reports(ref_df, cur_df, verdict, shown, out, verdict["group_by"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _write_html(summary, out, os.path.relpath(root / "index.html", out))
    write_index(root)
    if publish_to:
        summary["published"] = publish(root, publish_to, endpoint_url=endpoint_url)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
