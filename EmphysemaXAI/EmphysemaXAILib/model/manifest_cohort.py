"""Users' labelled cohorts: the manifest CSV (``docs/contracts.md``), its cases as bags of tiles for
training, and a predictor's rows for every case (``train --manifest`` and ``evaluate --manifest``
are in :mod:`.runs`).

Manifest columns: ``path`` (any input ``read_ct`` takes; relative paths are relative to the
manifest), optional ``lung_mask`` (label map on the CT grid; else the lungs are segmented with
the ``auto`` engine), ``label`` (a severity class name) and / or ``extent_pct``, and ``subject``
(cases of one subject never straddle a split).
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..analysis.robust_extent import naive_laa950_pct
from ..analysis.severity import SEVERITY_CLASSES, severity_class
from ..errors import InputError
from ..io.read import read_ct
from ..segmentation import case_lung_labels
from .figures import summary_fields
from .severity_dataset import case_bag


def read_manifest(path) -> list:
    """Rows of a manifest as dicts with absolute ``path`` / ``lung_mask``, ``label`` (class name
    or None), ``extent_pct`` (float or None), ``subject``. Bad rows are refused by line number."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist; give a CSV with path, label and/or extent_pct, subject")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        rows = list(reader)
    missing = {"path", "subject"} - columns
    if missing or not ({"label", "extent_pct"} & columns):
        raise InputError(f"manifest {path} needs the columns path, subject and label and/or extent_pct "
                         f"(found: {', '.join(sorted(columns)) or 'none'})")
    out = []
    for line, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip().lower() or None
        if label is not None and label not in SEVERITY_CLASSES:
            raise InputError(f"{path} line {line}: label {label!r} is not one of {', '.join(SEVERITY_CLASSES)}")
        extent = (row.get("extent_pct") or "").strip()
        try:
            extent = float(extent) if extent else None
        except ValueError:
            raise InputError(f"{path} line {line}: extent_pct {extent!r} is not a number") from None
        if label is None and extent is None:
            raise InputError(f"{path} line {line}: give a label or an extent_pct")
        case = Path(row["path"].strip())
        mask = (row.get("lung_mask") or "").strip()
        out.append({"path": case if case.is_absolute() else path.parent / case,
                    "lung_mask": (Path(mask) if Path(mask).is_absolute() else path.parent / mask) if mask else None,
                    "label": label if label is not None else severity_class(extent),
                    "extent_pct": extent, "subject": (row.get("subject") or "").strip() or str(case)})
    if not out:
        raise InputError(f"manifest {path} has no cases")
    return out


def manifest_bags(rows: list, size: int, slices: int, progress: bool = True) -> list:
    """One CaseBag per manifest row (read, lung mask or segmentation, working grid, tiles)."""
    from tqdm import tqdm

    bags = []
    for row in tqdm(rows, desc="cases", disable=not progress):
        ct = read_ct(row["path"])
        labels = case_lung_labels(ct, row["lung_mask"])
        extent = row["extent_pct"] if row["extent_pct"] is not None else float("nan")
        bags.append(case_bag(ct, labels, Path(row["path"]).name, row["subject"], size, slices, extent,
                             SEVERITY_CLASSES.index(row["label"]), {}))
    return bags


def evaluate_manifest_rows(predictor, manifest, progress: bool = True) -> list:
    """Predictions for every manifest case with the given predictor (either model kind)."""
    from tqdm import tqdm

    rows = []
    for row in tqdm(read_manifest(manifest), desc="cases", disable=not progress):
        ct = read_ct(row["path"])
        labels = case_lung_labels(ct, row["lung_mask"])
        summary = predictor.predict(ct, labels).summary
        lung = labels > 0
        rows.append({"name": Path(row["path"]).name, "subject": row["subject"], "label": row["label"],
                     "extent_true": row["extent_pct"], "naive_laa950_pct": naive_laa950_pct(ct.hu, lung),
                     **summary_fields(summary)})
    return rows
