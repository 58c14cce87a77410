"""Great Expectations checks over a data source (ISIC 2019 folder, HAM10000 folder or MedMNIST npz).

The ground truth is read here as plain strings, not through the reader, because the reader stops at the
first fault while validation must name every bad row and file. Image checks (exists, decodes, mode,
size) are computed once per file into derived columns, and the expectations run over those columns, so one
suite covers table and pixel faults and its result lists every offending row.

Outputs (with `report=DIR`): `validation_summary.json`, `validation_report.html`, `quarantine.csv`
(images that are missing, corrupt or truncated, by name) and `ge_result.json` (the raw GX result).
"""

from __future__ import annotations

import csv
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..pages import Markup, bullets, code, heading, page, para, table
from .classes import ISIC2019_CLASSES
from .errors import DataError

# Domains of the official ISIC 2019 metadata (training and test tables); empty values are allowed.
SEX_DOMAIN = ["male", "female"]
SITE_DOMAIN = [
    "anterior torso", "posterior torso", "lateral torso", "upper extremity", "lower extremity",
    "head/neck", "palms/soles", "oral/genital",
]
AGE_RANGE = (0, 100)
ONE_HOT_VALUES = ["0", "1", "0.0", "1.0"]
DEFAULT_MIN_SIZE = 28  # MedMNIST's native size; anything smaller cannot feed the smallest model

QUARANTINE_REASONS = ("missing", "truncated", "corrupt", "missing mask", "corrupt mask")


@dataclass
class Check:
    name: str  # the GX expectation type
    column: str | None
    intent: str
    success: bool
    offenders: list[str] = field(default_factory=list)  # one line per bad row / file / column
    detail: str = ""


@dataclass
class ValidationResult:
    ok: bool
    summary: dict
    quarantined: list[dict]  # {"image_id", "path", "reason"}
    dropped: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Every failure as one line that names the file, row or column at fault."""
        lines = []
        for c in self.checks:
            if c.success:
                continue
            head = f"{c.name}" + (f"({c.column})" if c.column else "")
            if c.offenders:
                lines.extend(f"{head}: {o}" for o in c.offenders)
            else:
                lines.append(f"{head}: {c.detail or 'failed'}")
        return lines


# ---- image inspection ------------------------------------------------------------------------

def inspect_image(path: str) -> dict:
    """exists / decodes / mode / min side / quarantine reason of one image file."""
    from PIL import Image

    if not path:  # a row without an image name: the not-null expectation names it, there is no file to check
        return {"exists": None, "decodes": None, "mode": None, "min_side": None, "reason": None, "error": None}
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return {"exists": False, "decodes": None, "mode": None, "min_side": None, "reason": "missing",
                "error": "file not found"}
    except OSError as e:  # a folder or an unreadable file where an image should be
        return {"exists": True, "decodes": False, "mode": None, "min_side": None, "reason": "corrupt",
                "error": f"unreadable ({e.strerror or e})"}
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode, size = im.mode, im.size
            im.load()  # full decode: header-only checks miss truncated scans
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... for bad files
        msg = str(e) or type(e).__name__
        reason = "truncated" if "truncated" in msg.lower() else "corrupt"
        return {"exists": True, "decodes": False, "mode": None, "min_side": None, "reason": reason, "error": msg}
    if p.suffix.lower() in (".jpg", ".jpeg") and b"\xff\xd9" not in data[-4096:]:
        # Should any module set PIL's ImageFile.LOAD_TRUNCATED_IMAGES, a cut JPEG decodes silently (grey
        # padding); its missing end-of-image marker still gives it away.
        return {"exists": True, "decodes": False, "mode": mode, "min_side": min(size), "reason": "truncated",
                "error": "no JPEG end-of-image marker"}
    return {"exists": True, "decodes": True, "mode": mode, "min_side": int(min(size)), "reason": None, "error": None}


def inspect_images(paths: list[str], workers: int = 4, progress: bool = False) -> list[dict]:
    # PIL releases the GIL while decoding, so threads overlap the decode of small JPEGs.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        it = ex.map(inspect_image, paths, chunksize=32)
        if progress:
            from rich.progress import track

            it = track(it, total=len(paths), description=f"checking {len(paths)} images", transient=True)
        return list(it)


# ---- tables --------------------------------------------------------------------------------------

def _isic_table(root: Path, splits: dict[str, str] | None, part: str | None, workers: int, progress: bool):
    """(rows DataFrame, ground-truth path, class columns present, expected classes)."""
    import pandas as pd

    from .isic import find_layout, list_images

    layout = find_layout(root, part)
    if layout is None:
        raise DataError(f"{root}: no ISIC 2019 ground-truth CSV found (not an ISIC 2019 folder)")
    gt_path, meta_path, img_dir, default_split = layout
    try:
        gt = pd.read_csv(gt_path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DataError(f"{gt_path}: unreadable CSV ({e})") from e
    gt.columns = [c.strip() for c in gt.columns]
    class_cols = [c for c in ISIC2019_CLASSES if c in gt.columns]
    rows = pd.DataFrame(index=pd.RangeIndex(len(gt)))
    rows["_row"] = np.arange(len(gt)) + 2  # CSV line number (line 1 is the header)
    rows["image"] = gt["image"].str.strip().replace("", None) if "image" in gt.columns else None
    for c in gt.columns:
        if c != "image":
            rows[c] = gt[c].str.strip()
    if class_cols:
        num = gt[class_cols].apply(lambda s: pd.to_numeric(s.str.strip(), errors="coerce"))
        hot = num.eq(1.0)
        rows["_n_hot"] = hot.sum(axis=1).astype(int)
        rows["_label"] = [class_cols[int(np.argmax(h))] if n == 1 else None
                          for h, n in zip(hot.to_numpy(), rows["_n_hot"])]
    else:
        rows["_n_hot"] = 0
        rows["_label"] = None
    # metadata, joined by image name
    if meta_path.is_file():
        meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
        meta.columns = [c.strip() for c in meta.columns]
        if "image" in meta.columns:
            meta = meta.drop_duplicates("image").set_index("image")
            for col in ("age_approx", "anatom_site_general", "lesion_id", "sex", "split"):
                if col in meta.columns:
                    vals = meta[col].str.strip().replace("", None)
                    rows[col] = rows["image"].map(vals)
    if "age_approx" in rows.columns:
        age = pd.to_numeric(rows["age_approx"], errors="coerce")
        # A non-empty age that is not a number fails the range check instead of vanishing as NaN.
        rows["_age"] = age.where(age.notna() | rows["age_approx"].isna(), -1.0)
    # splits and lesion groups
    group = rows["lesion_id"] if "lesion_id" in rows.columns else pd.Series(None, index=rows.index, dtype=object)
    rows["_group"] = group.where(group.notna(), rows["image"])
    if splits is not None:
        rows["_split"] = rows["image"].map(splits)
    elif "split" in rows.columns:
        rows["_split"] = rows["split"].fillna(default_split)
    else:
        rows["_split"] = default_split
    n_splits = rows.dropna(subset=["_split"]).groupby("_group")["_split"].nunique()
    rows["_group_splits"] = rows["_group"].map(n_splits).astype("Int64")
    # images
    files = list_images(img_dir)
    paths = [str(files.get(n) or img_dir / f"{n}.jpg") if n else "" for n in rows["image"].fillna("")]
    rows["_path"] = paths
    info = inspect_images(paths, workers=workers, progress=progress)
    for key in ("exists", "decodes", "mode", "min_side", "reason", "error"):
        rows[f"_{key}"] = [d[key] for d in info]
    rows["_min_side"] = rows["_min_side"].astype("Int64")
    if gt_path.name.startswith("synthetic"):
        expected = []  # a synthetic set holds only the classes it was generated for
    elif default_split == "test":
        expected = class_cols  # the test ground truth includes UNK
    else:
        expected = [c for c in class_cols if c != "UNK"]
    return rows, gt_path, list(gt.columns), class_cols, expected


def inspect_mask(path: str) -> dict:
    """exists / decodes / size of one mask PNG (size as "WxH", compared with its image's)."""
    from PIL import Image

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {"exists": False, "decodes": None, "size": None, "reason": "missing mask", "error": "mask file not found"}
    except OSError as e:
        return {"exists": True, "decodes": False, "size": None, "reason": "corrupt mask",
                "error": f"unreadable mask ({e.strerror or e})"}
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return {"exists": True, "decodes": True, "size": f"{im.size[0]}x{im.size[1]}", "reason": None, "error": None}
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
        return {"exists": True, "decodes": False, "size": None, "reason": "corrupt mask", "error": str(e) or type(e).__name__}


def _image_size(path: str) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return f"{im.size[0]}x{im.size[1]}"
    except Exception:  # noqa: BLE001 - the image checks report why it does not open
        return None


def _ham_table(root: Path, splits: dict[str, str] | None, workers: int, progress: bool):
    """(rows DataFrame, metadata path, metadata columns) of a HAM10000 folder, every image and mask inspected."""
    import pandas as pd

    from .classes import HAM_TO_ISIC
    from .ham import IMAGES, METADATA, SPLIT, mask_path

    meta_path = root / METADATA
    try:
        meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DataError(f"{meta_path}: unreadable CSV ({e})") from e
    meta.columns = [c.strip() for c in meta.columns]
    rows = pd.DataFrame(index=pd.RangeIndex(len(meta)))
    rows["_row"] = np.arange(len(meta)) + 2
    for c in meta.columns:
        rows[c] = meta[c].str.strip().replace("", None)
    for c in ("image_id", "lesion_id", "dx"):
        if c not in rows.columns:
            rows[c] = None
    rows["image"] = rows["image_id"]
    rows["_label"] = rows["dx"].map(HAM_TO_ISIC)
    if "age" in rows.columns:
        age = pd.to_numeric(rows["age"], errors="coerce")
        rows["_age"] = age.where(age.notna() | rows["age"].isna(), -1.0)
    rows["_group"] = rows["lesion_id"].where(rows["lesion_id"].notna(), rows["image"])
    rows["_split"] = rows["image"].map(splits) if splits is not None else SPLIT
    n_splits = rows.dropna(subset=["_split"]).groupby("_group")["_split"].nunique()
    rows["_group_splits"] = rows["_group"].map(n_splits).astype("Int64")
    ids = rows["image"].fillna("")
    rows["_path"] = [str(root / IMAGES / f"{n}.jpg") if n else "" for n in ids]
    rows["_mask_path"] = [str(mask_path(root, n)) if n else "" for n in ids]
    info = inspect_images(list(rows["_path"]), workers=workers, progress=progress)
    for key in ("exists", "decodes", "mode", "min_side", "reason", "error"):
        rows[f"_{key}"] = [d[key] for d in info]
    rows["_min_side"] = rows["_min_side"].astype("Int64")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        minfo = list(ex.map(lambda p: inspect_mask(p) if p else {"exists": None, "decodes": None, "size": None,
                                                                   "reason": None, "error": None},
                            rows["_mask_path"], chunksize=32))
        isize = list(ex.map(lambda p, ok: _image_size(p) if ok else None, rows["_path"], rows["_decodes"] == True,  # noqa: E712
                            chunksize=32))
    rows["_mask_exists"] = [d["exists"] for d in minfo]
    rows["_mask_decodes"] = [d["decodes"] for d in minfo]
    rows["_mask_error"] = [d["error"] for d in minfo]
    rows["_image_size"] = isize
    rows["_mask_size"] = [d["size"] for d in minfo]
    # Sizes agree, or one side is unreadable (then the exists/decodes checks name it): null is not a mismatch.
    both = rows["_image_size"].notna() & rows["_mask_size"].notna()
    rows["_sizes_agree"] = (~both) | (rows["_image_size"] == rows["_mask_size"])
    # A missing or corrupt mask quarantines its image as well: the pair is one training example.
    image_reason = rows["_reason"]
    mask_reason = pd.Series([d["reason"] for d in minfo], index=rows.index)
    rows["_reason"] = image_reason.where(image_reason.notna(), mask_reason)
    rows["_error"] = rows["_error"].where(image_reason.notna(),
                                          [f"{m}: {e}" if e else None for m, e in zip(rows["_mask_path"], rows["_mask_error"])])
    return rows, meta_path, list(meta.columns)


def _ham_expectations(gx, rows, columns, min_size):
    from .classes import HAM_TO_ISIC

    E = gx.expectations
    exps = [
        # Intent: every row names its image and lesion; a row without a lesion id cannot be grouped, so its
        # images could land on both sides of a fold.
        (E.ExpectColumnValuesToNotBeNull(column="image"), "every row names an image"),
        (E.ExpectColumnValuesToNotBeNull(column="lesion_id"), "every row names its lesion (lesion_id present)"),
        # Intent: an image listed twice would be counted twice and could carry two diagnoses.
        (E.ExpectColumnValuesToBeUnique(column="image"), "no image listed twice"),
        # Intent: dx is one of HAM10000's seven codes; anything else has no ISIC 2019 class.
        (E.ExpectColumnValuesToBeInSet(column="dx", value_set=list(HAM_TO_ISIC)), "dx in the known set"),
        # Intent: every listed image exists, decodes fully, is RGB and large enough for the smallest model.
        (E.ExpectColumnValuesToBeInSet(column="_exists", value_set=[True]), "every listed image exists"),
        (E.ExpectColumnValuesToBeInSet(column="_decodes", value_set=[True]), "every image decodes"),
        (E.ExpectColumnValuesToBeInSet(column="_mode", value_set=["RGB"]), "image mode RGB"),
        (E.ExpectColumnValuesToBeBetween(column="_min_side", min_value=min_size), f"image short side >= {min_size} px"),
        # Intent: every image has its expert mask, the mask decodes, and it has the image's size, otherwise the
        # lesion region drawn on the image is wrong.
        (E.ExpectColumnValuesToBeInSet(column="_mask_exists", value_set=[True]), "every image has its mask"),
        (E.ExpectColumnValuesToBeInSet(column="_mask_decodes", value_set=[True]), "every mask decodes"),
        (E.ExpectColumnValuesToBeInSet(column="_sizes_agree", value_set=[True]), "mask and image sizes agree"),
        # Intent: all seven classes are present (a class absent from the data cannot be learnt).
        (E.ExpectColumnDistinctValuesToContainSet(column="_label", value_set=sorted(set(HAM_TO_ISIC.values()))),
         "every class present"),
        # Intent: no lesion in two splits of a given manifest.
        (E.ExpectColumnValuesToBeInSet(column="_group_splits", value_set=[1]), "no lesion in two splits"),
    ]
    if "sex" in rows.columns:
        # Intent: HAM10000 records sex as male/female/unknown (empty allowed).
        exps.append((E.ExpectColumnValuesToBeInSet(column="sex", value_set=[*SEX_DOMAIN, "unknown"]),
                     "sex in {male, female, unknown}"))
    if "_age" in rows.columns:
        exps.append((E.ExpectColumnValuesToBeBetween(column="_age", min_value=AGE_RANGE[0], max_value=AGE_RANGE[1]),
                     f"age numeric in [{AGE_RANGE[0]}, {AGE_RANGE[1]}]"))
    return exps


def _quarantine(rows, drop_invalid: bool):
    """(rows, quarantined files, dropped ids): every named image with a quarantine reason; dropped from the rows
    with `drop_invalid`, so the checks then run on what is left."""
    bad = rows[rows["_reason"].notna() & rows["image"].notna()]
    quarantined = [{"image_id": r["image"], "path": r["_path"], "reason": r["_reason"], "error": r["_error"]}
                   for r in bad.to_dict("records")]
    dropped: list[str] = []
    if drop_invalid and len(bad):
        dropped = list(bad["image"])
        rows = rows.drop(index=bad.index).reset_index(drop=True)
    return rows, quarantined, dropped


def _npz_table(path: Path):
    import pandas as pd

    from .medmnist import CLASSES, SPLITS, load_npz_arrays

    arrays = load_npz_arrays(path)
    frames = []
    for s in SPLITS:
        if f"{s}_images" not in arrays and f"{s}_labels" not in arrays:
            continue
        x = arrays.get(f"{s}_images")
        y = arrays.get(f"{s}_labels")
        n = max(len(x) if x is not None else 0, len(y) if y is not None else 0)
        y = np.full(n, -1) if y is None else y.reshape(len(y), -1)[:, 0].astype(np.int64)
        f = pd.DataFrame({"image": [f"{s}_{i:05d}" for i in range(n)], "_split": s})
        f["_row"] = np.arange(n)
        # Rows beyond the label array get no label index (null), so only `_has_label` names them.
        f["_label_index"] = pd.array(list(y) + [None] * (n - len(y)), dtype="Int64")
        f["_label"] = [CLASSES[v] if v is not pd.NA and 0 <= v < len(CLASSES) else None for v in f["_label_index"]]
        ok_shape = x is not None and x.ndim == 4 and x.shape[-1] == 3 and x.dtype == np.uint8
        f["_mode"] = "RGB" if ok_shape else f"array {None if x is None else (x.shape, str(x.dtype))}"
        f["_min_side"] = int(min(x.shape[1:3])) if x is not None and x.ndim >= 3 else 0
        # An image row without a label (or a label without an image) means the two arrays disagree.
        f["_exists"] = np.arange(n) < (len(x) if x is not None else 0)
        f["_has_label"] = np.arange(n) < len(y)
        frames.append(f)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["image", "_split", "_label"])
    rows["_group"] = rows["image"]  # DermaMNIST has no lesion ids: every image is its own group
    rows["_group_splits"] = 1
    keys = pd.DataFrame({k: [str(v.shape)] for k, v in arrays.items()})
    return rows, keys, CLASSES


# ---- the suite -------------------------------------------------------------------------------------

def _gx_context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return gx, ctx


def _run_suite(ctx, name: str, df, expectations):
    """Validate df against (expectation, intent) pairs; returns the GX result and the intents by index."""
    import great_expectations as gx

    src = ctx.data_sources.add_pandas(f"{name}_source")
    batch_def = src.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
    for exp, intent in expectations:
        exp.meta = {"intent": intent}
    # One add with all expectations: adding them one by one re-serialises the whole suite each time.
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"tailsynth_{name}", expectations=[e for e, _ in expectations]))
    batch = batch_def.get_batch(batch_parameters={"dataframe": df})
    return batch.validate(suite, result_format="COMPLETE")


def _describe_row(rows, i, gt_name: str) -> str:
    r = rows.loc[i]
    img = r.get("image")
    where = f"{gt_name} row {int(r['_row'])}" if gt_name else f"{r.get('_split')} index {int(r['_row'])}"
    return f"{where} (image {img!r})"


def _collect(result, rows, gt_name: str, detail_col: dict) -> list[Check]:
    checks = []
    for r in result.results:
        cfg = r.expectation_config
        col = cfg.kwargs.get("column")
        res = dict(r.result or {})
        offenders: list[str] = []
        detail = ""
        if not r.success:
            idx = res.get("unexpected_index_list") or []
            if idx and rows is not None:
                for i in idx:
                    line = _describe_row(rows, i, gt_name)
                    extra = detail_col.get(col)
                    if extra is not None:
                        line += f": {extra(rows.loc[i])}"
                    elif col in rows.columns:
                        v = rows.loc[i, col]
                        line += f": {col}={v.item() if isinstance(v, np.generic) else v!r}"
                    offenders.append(line)
            elif cfg.type == "expect_column_to_exist":
                detail = f"column {col!r} missing"
            elif cfg.type == "expect_column_distinct_values_to_contain_set":
                present = set(rows[col].dropna()) if rows is not None and col in rows.columns else set()
                missing = [v for v in cfg.kwargs["value_set"] if v not in present]
                detail = f"class(es) without any image: {', '.join(missing)}"
            else:
                ex = getattr(r, "exception_info", None) or {}
                detail = ex.get("exception_message") or json.dumps(res, default=str)[:300]
        checks.append(Check(cfg.type, col, (cfg.meta or {}).get("intent", ""), bool(r.success), offenders, detail))
    return checks


def _isic_expectations(gx, rows, gt_columns, class_cols, expected, min_size):
    E = gx.expectations
    exps = []
    if "image" in gt_columns:
        # Intent: every row names its image; an empty name cannot be joined to a file or metadata.
        exps.append((E.ExpectColumnValuesToNotBeNull(column="image"), "every row names an image"))
        # Intent: image ids are unique, so one image cannot carry two labels or be counted twice.
        exps.append((E.ExpectColumnValuesToBeUnique(column="image"), "image ids unique"))
    for c in class_cols:
        # Intent: one-hot cells are 0/1 only (the official files write 1.0/0.0, the test table 1/0).
        exps.append((E.ExpectColumnValuesToBeInSet(column=c, value_set=ONE_HOT_VALUES), f"{c} values in {{0,1}}"))
    # Intent: every row is one-hot, exactly one class set: two-hot or all-zero rows have no single label.
    exps.append((E.ExpectColumnValuesToBeInSet(column="_n_hot", value_set=[1]), "exactly one class per row"))
    # Intent: every listed image exists in the image folder.
    exps.append((E.ExpectColumnValuesToBeInSet(column="_exists", value_set=[True]), "every listed image exists"))
    # Intent: every existing image decodes completely (corrupt and truncated files are quarantined).
    exps.append((E.ExpectColumnValuesToBeInSet(column="_decodes", value_set=[True]), "every image decodes"))
    # Intent: images are 3-channel RGB; grey or CMYK files would change the input statistics silently.
    exps.append((E.ExpectColumnValuesToBeInSet(column="_mode", value_set=["RGB"]), "image mode RGB"))
    # Intent: images are at least min_size on their short side, the smallest resolution the models use.
    exps.append((E.ExpectColumnValuesToBeBetween(column="_min_side", min_value=min_size),
                 f"image short side >= {min_size} px"))
    # Intent: every expected class has at least one image (a class absent from the data cannot be learnt).
    if expected:
        exps.append((E.ExpectColumnDistinctValuesToContainSet(column="_label", value_set=list(expected)),
                     "every expected class present"))
    if "sex" in rows.columns:
        # Intent: metadata sex within the ISIC domain (empty allowed).
        exps.append((E.ExpectColumnValuesToBeInSet(column="sex", value_set=SEX_DOMAIN), "sex in {male, female}"))
    if "anatom_site_general" in rows.columns:
        # Intent: anatomic site within the ISIC 2019 vocabulary (empty allowed).
        exps.append((E.ExpectColumnValuesToBeInSet(column="anatom_site_general", value_set=SITE_DOMAIN),
                     "anatomic site in the ISIC vocabulary"))
    if "_age" in rows.columns:
        # Intent: approximate age is a number of years in a human range (empty allowed).
        exps.append((E.ExpectColumnValuesToBeBetween(column="_age", min_value=AGE_RANGE[0], max_value=AGE_RANGE[1]),
                     f"age_approx numeric in [{AGE_RANGE[0]}, {AGE_RANGE[1]}]"))
    # Intent: no lesion in two splits: images of one lesion in train and test leak the answer.
    exps.append((E.ExpectColumnValuesToBeInSet(column="_group_splits", value_set=[1]), "no lesion in two splits"))
    return exps


def _gt_column_expectations(gx):
    E = gx.expectations
    # Intent: the ground-truth CSV has the image column and every ISIC 2019 class column (UNK is optional
    # in the training table), otherwise labels would silently shift or vanish. Checked on the CSV's own
    # header, not on the derived table, which always has an `image` column.
    return [(E.ExpectColumnToExist(column=c), f"ground-truth column {c} present")
            for c in ["image", *[c for c in ISIC2019_CLASSES if c != "UNK"]]]


def _npz_expectations(gx, expected, min_size):
    E = gx.expectations
    exps = []
    # Intent: the row-level table is well formed: unique ids.
    exps.append((E.ExpectColumnValuesToBeUnique(column="image"), "image ids unique"))
    # Intent: labels are indices into the 7 DermaMNIST classes (akiec..vasc) and every image has one.
    exps.append((E.ExpectColumnValuesToBeBetween(column="_label_index", min_value=0, max_value=len(expected) - 1),
                 "label index within the class list"))
    exps.append((E.ExpectColumnValuesToBeInSet(column="_has_label", value_set=[True]), "every image has a label"))
    # Intent: every label row has an image.
    exps.append((E.ExpectColumnValuesToBeInSet(column="_exists", value_set=[True]), "every label has an image"))
    # Intent: images are N x H x W x 3 uint8 (RGB).
    exps.append((E.ExpectColumnValuesToBeInSet(column="_mode", value_set=["RGB"]), "images RGB uint8"))
    # Intent: images at least min_size on their short side.
    exps.append((E.ExpectColumnValuesToBeBetween(column="_min_side", min_value=min_size),
                 f"image short side >= {min_size} px"))
    # Intent: every class present.
    exps.append((E.ExpectColumnDistinctValuesToContainSet(column="_label", value_set=list(expected)),
                 "every expected class present"))
    # Intent: no image in two splits (DermaMNIST has no lesion ids; each image is its own group).
    exps.append((E.ExpectColumnValuesToBeInSet(column="_group_splits", value_set=[1]), "no lesion in two splits"))
    return exps


def _npz_key_expectations(gx, keys):
    E = gx.expectations
    # Intent: the MedMNIST layout's arrays are present (the npz counterpart of ground-truth columns).
    return [(E.ExpectColumnToExist(column=k), f"npz key {k} present")
            for k in ("train_images", "train_labels", "val_images", "val_labels")]


# ---- offender lines --------------------------------------------------------------------------

def _image_error(r) -> str:
    return f"{r['_path']}: {r['_error']}"


def _mask_error(r) -> str:
    return f"{r['_mask_path']}: {r['_mask_error']}"


# What a failing derived column says about its row: the file at fault and what is wrong with it. One table for
# both folder formats: each suite has expectations only on its own columns (HAM: masks; ISIC: _n_hot).
_ROW_DETAIL = {
    "_exists": _image_error, "_decodes": _image_error, "_mask_exists": _mask_error, "_mask_decodes": _mask_error,
    "_sizes_agree": lambda r: f"{r['_mask_path']}: mask {r['_mask_size']} but image {r['_image_size']}",
    "_group_splits": lambda r: f"lesion {r['_group']!r} split {r['_split']!r} shares a lesion with another split",
    "_mode": lambda r: f"{r['_path']}: mode {r['_mode']}",
    "_min_side": lambda r: f"{r['_path']}: short side {r['_min_side']} px",
    "_n_hot": lambda r: f"{int(r['_n_hot'])} classes set",
}


# ---- entry point -----------------------------------------------------------------------------------

@dataclass
class _SuiteRun:
    """What one format's suite produced: the rows checked, the checks, the quarantine and the raw GX results."""

    n_rows: int
    checks: list[Check]
    results: list
    quarantined: list[dict] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _validate_ham(source: Path, assignment, drop_invalid: bool, min_size: int, workers: int,
                  progress: bool) -> _SuiteRun:
    gx, ctx = _gx_context()
    rows, meta_path, columns = _ham_table(source, assignment, workers, progress)
    rows, quarantined, dropped = _quarantine(rows, drop_invalid)
    res = _run_suite(ctx, "ham", rows, _ham_expectations(gx, rows, columns, min_size))
    checks = _collect(res, rows, meta_path.name, _ROW_DETAIL)
    return _SuiteRun(len(rows), checks, [res], quarantined, dropped)


def _validate_isic(source: Path, assignment, part: str | None, drop_invalid: bool, min_size: int,
                   expected_classes: list[str] | None, workers: int, progress: bool) -> _SuiteRun:
    import pandas as pd

    gx, ctx = _gx_context()
    rows, gt_path, gt_columns, class_cols, expected = _isic_table(source, assignment, part, workers, progress)
    rows, quarantined, dropped = _quarantine(rows, drop_invalid)
    expected = expected_classes or expected
    # The CSV's own header (one empty row): the derived table always has an `image` column.
    header = pd.DataFrame([[""] * len(gt_columns)], columns=gt_columns)
    res_h = _run_suite(ctx, "isic_columns", header, _gt_column_expectations(gx))
    checks = _collect(res_h, None, gt_path.name, {})
    res = _run_suite(ctx, "isic", rows, _isic_expectations(gx, rows, gt_columns, class_cols, expected, min_size))
    checks += _collect(res, rows, gt_path.name, _ROW_DETAIL)
    return _SuiteRun(len(rows), checks, [res_h, res], quarantined, dropped)


def _validate_npz(source: Path, min_size: int, expected_classes: list[str] | None) -> _SuiteRun:
    gx, ctx = _gx_context()
    rows, keys, classes = _npz_table(source)
    expected = expected_classes or classes
    res_k = _run_suite(ctx, "npz_keys", keys, _npz_key_expectations(gx, keys))
    res = _run_suite(ctx, "npz", rows, _npz_expectations(gx, expected, min_size))
    return _SuiteRun(len(rows), _collect(res_k, None, "", {}) + _collect(res, rows, "", {}), [res_k, res])


def _quarantine_check(quarantined: list[dict]) -> Check:
    """The failing check a quarantine adds when the images are not dropped."""
    reasons = {r: sum(q["reason"] == r for q in quarantined) for r in QUARANTINE_REASONS}
    return Check(
        "quarantine", None, "no corrupt, truncated or missing images", False, [],
        f"{len(quarantined)} image(s) quarantined ("
        + ", ".join(f"{n} {r}" for r, n in reasons.items() if n)
        + "); listed in quarantine.csv with --report; --drop-invalid drops exactly these",
    )


def _summary(source: Path, fmt: str, ok: bool, run: _SuiteRun, drop_invalid: bool, t0: float) -> dict:
    """validation_summary.json."""
    checks = run.checks
    return {
        "source": str(source),
        "format": fmt,
        "ok": ok,
        "rows": run.n_rows,
        "checks_total": len(checks),
        "checks_failed": sum(not c.success for c in checks),
        "checks": [
            {"expectation": c.name, "column": c.column, "intent": c.intent, "success": c.success,
             "unexpected_count": len(c.offenders), "offenders": c.offenders[:1000], "detail": c.detail}
            for c in checks
        ],
        "quarantined": run.quarantined,
        "dropped": run.dropped,
        "drop_invalid": drop_invalid,
        "seconds": round(time.time() - t0, 3),
    }


def validate_source(
    source: str | Path,
    report: str | Path | None = None,
    drop_invalid: bool = False,
    splits: str | Path | None = None,
    part: str | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    expected_classes: list[str] | None = None,
    workers: int = 4,
    progress: bool = False,
) -> ValidationResult:
    """Run the suite over SOURCE; with `drop_invalid`, quarantined images are left out before the checks.

    `splits`: a manifest CSV (`image_id,split`) whose assignment is checked for lesions in two splits.
    """
    from .source import detect_format, read_split_manifest

    t0 = time.time()
    source = Path(source)
    fmt = detect_format(source)
    assignment = read_split_manifest(splits) if splits is not None else None
    if fmt == "ham10000":
        run = _validate_ham(source, assignment, drop_invalid, min_size, workers, progress)
    elif fmt == "isic2019":
        run = _validate_isic(source, assignment, part, drop_invalid, min_size, expected_classes, workers, progress)
    else:
        run = _validate_npz(source, min_size, expected_classes)
    ok = all(c.success for c in run.checks) and (not run.quarantined or drop_invalid)
    if run.quarantined and not drop_invalid:
        # The quarantine is what fails here, named file by file; --drop-invalid is the explicit opt-out.
        # Each quarantined file is already named by the exists/decodes expectations above.
        run.checks.append(_quarantine_check(run.quarantined))
    result = ValidationResult(ok, _summary(source, fmt, ok, run, drop_invalid, t0), run.quarantined, run.dropped,
                              run.checks)
    if report is not None:
        write_report(result, Path(report), run.results)
    return result


def write_report(result: ValidationResult, out: Path, gx_results=()) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": out / "validation_summary.json",
        "html": out / "validation_report.html",
        "quarantine": out / "quarantine.csv",
        "gx": out / "ge_result.json",
    }
    paths["summary"].write_text(json.dumps(result.summary, indent=2, default=str))
    with open(paths["quarantine"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "path", "reason", "error", "dropped"])
        dropped = set(result.dropped)
        for q in result.quarantined:
            w.writerow([q["image_id"], q["path"], q["reason"], q["error"], q["image_id"] in dropped])
    paths["gx"].write_text(json.dumps([r.to_json_dict() for r in gx_results], default=str)[:50_000_000])
    paths["html"].write_text(render_html(result))
    return paths


def render_html(result: ValidationResult) -> str:
    s = result.summary
    status = "PASSED" if result.ok else "FAILED"
    rows = []
    for c in s["checks"]:
        offenders = list(c["offenders"][:200])
        if c["unexpected_count"] > 200:
            offenders.append(f"... {c['unexpected_count'] - 200} more")
        detail = Markup(para(c["detail"]) + (bullets(offenders) if offenders else ""))
        rows.append(["✔" if c["success"] else "✘", c["expectation"], str(c["column"] or ""), c["intent"],
                     c["unexpected_count"], detail])
    return page(
        "tailsynth data validation",
        para("Source ", code(s["source"]), f" ({s['format']}), {s['rows']} rows, {s['checks_failed']} of "
             f"{s['checks_total']} checks failed, {len(s['quarantined'])} images quarantined, {len(s['dropped'])} "
             f"dropped (--drop-invalid {'on' if s['drop_invalid'] else 'off'}), {s['seconds']} s."),
        heading("Expectations (Great Expectations)"),
        table(["", "expectation", "column", "intent", "bad", "offenders"], rows, text=True,
              row_classes=["ok" if c["success"] else "bad" for c in s["checks"]]),
        heading("Quarantine"),
        table(["image", "reason", "path", "error"],
              [[x["image_id"], x["reason"], x["path"], str(x["error"])] for x in s["quarantined"]], text=True),
        h1=f"Data validation: {status}")
