"""Join and check the inputs of ``fit-linear``: a features table and a labels table.

Features: a DataFrame with ``id``, optional QCT columns (``models.QCT_COLUMNS``: %LAA-950 in %,
Perc15 in HU, total lung volume in litres) and feature columns (every other column, numeric).
Labels: ``id`` (or ``path``: image paths relative to the image folder, compared in posix form),
``label`` (binary or multi-class, strings or ints), optionally a group column and ``laa_pct``.
Every problem raises :class:`InputError` with one line saying what is wrong and what to do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..analysis.severity import SEVERITY_CLASSES
from ..errors import InputError
from .models import QCT_COLUMNS

NEGATIVE_NAMES = {"0", "0.0", "none", "negative", "normal", "healthy", "no", "false", "control", "absent"}


@dataclass
class Cohort:
    """The joined cohort: ``n`` cases in labels order."""
    ids: list
    X: np.ndarray                  # (n, p) embedding feature columns
    Q: np.ndarray                  # (n, q) QCT columns present (q may be 0)
    feature_columns: list
    qct_columns: list
    y: np.ndarray                  # (n,) class indices into ``classes``; binary: 1 is positive
    classes: list                  # class names as strings
    groups: np.ndarray | None = None
    laa_pct: np.ndarray | None = None
    unlabelled: int = 0            # feature rows without a label (ignored)
    notes: list = field(default_factory=list)


def _norm_id(value) -> str:
    """An id as text; paths in posix form without a leading ``./``."""
    text = str(value).replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _class_order(values: pd.Series) -> list:
    """Distinct labels, sorted; severity class names in severity order; for two classes the
    negative one (``NEGATIVE_NAMES``) first, so that class index 1 is the positive class."""
    distinct = values.unique().tolist()
    try:
        distinct = sorted(distinct)
    except TypeError:
        distinct = sorted(distinct, key=str)
    if {str(d) for d in distinct} <= set(SEVERITY_CLASSES):         # none < mild < moderate < severe
        return sorted(distinct, key=lambda d: SEVERITY_CLASSES.index(str(d)))
    if len(distinct) == 2 and str(distinct[1]).strip().lower() in NEGATIVE_NAMES:
        distinct = distinct[::-1]
    return distinct


def load_cohort(features: pd.DataFrame, labels: pd.DataFrame, groups_column: str | None = None,
                require_qct: bool = False) -> Cohort:
    """Check both tables and join them on id (labels order); see the module docstring."""
    if "id" not in features.columns:
        raise InputError("the features table has no 'id' column; the embed step writes one (id + features)")
    key = "id" if "id" in labels.columns else "path" if "path" in labels.columns else None
    if key is None or "label" not in labels.columns:
        raise InputError("the labels CSV needs an 'id' (or 'path') column and a 'label' column")
    if labels["label"].isna().any():
        raise InputError(f"{int(labels['label'].isna().sum())} labels are empty; fill or drop those rows")
    if groups_column is not None:
        if groups_column not in labels.columns:
            raise InputError(f"no column {groups_column!r} in the labels CSV "
                             f"(columns: {', '.join(map(str, labels.columns))})")
        if labels[groups_column].isna().any():
            raise InputError(f"the group column {groups_column!r} has empty cells; give every case a group")
    feature_ids = features["id"].map(_norm_id)
    label_ids = labels[key].map(_norm_id)
    for name, ids in (("features table", feature_ids), ("labels CSV", label_ids)):
        if ids.duplicated().any():
            raise InputError(f"the {name} repeats ids, e.g. '{ids[ids.duplicated()].iloc[0]}'; one row per case")
    missing = sorted(set(label_ids) - set(feature_ids))
    if missing:
        raise InputError(f"{len(missing)} labelled ids have no features, e.g. '{missing[0]}'; "
                         "embed those cases or drop them from the labels CSV")

    qct = [c for c in QCT_COLUMNS if c in features.columns]
    extra = {"id", *QCT_COLUMNS}
    feature_columns = [c for c in features.columns if c not in extra]
    bad = [str(c) for c in feature_columns if not pd.api.types.is_numeric_dtype(features[c])
           or pd.api.types.is_bool_dtype(features[c])]
    bad += [c for c in qct if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise InputError(f"non-numeric feature columns: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; "
                         "every column besides id must be a number")
    if not feature_columns:
        raise InputError("the features table has no feature columns besides id and the QCT markers")
    if require_qct and not qct:
        raise InputError(f"fuse_qct (--fuse-qct) needs QCT columns ({', '.join(QCT_COLUMNS)}) in the features table; "
                         "none found")

    table = features.assign(_id=feature_ids).set_index("_id").loc[label_ids.tolist()]
    X = table[feature_columns].to_numpy(float)
    Q = table[qct].to_numpy(float)
    if not np.isfinite(X).all() or not np.isfinite(Q).all():
        raise InputError("the features table has missing or infinite values; re-run embed or drop those cases")

    classes = _class_order(labels["label"])
    index = {c: i for i, c in enumerate(classes)}
    y = labels["label"].map(index).to_numpy(int)
    counts = np.bincount(y, minlength=len(classes))
    if len(classes) < 2:
        raise InputError(f"all labels are '{classes[0]}': a classifier needs at least two classes")
    if counts.min() < 2:
        raise InputError(f"class '{classes[int(counts.argmin())]}' has {int(counts.min())} case; "
                         "every class needs at least 2 cases")
    laa = None
    if "laa_pct" in labels.columns:
        laa = pd.to_numeric(labels["laa_pct"], errors="coerce").to_numpy(float)
        if not np.isfinite(laa).all():
            raise InputError("the laa_pct column has empty or non-numeric cells; fill them or drop the column")
    groups = labels[groups_column].astype(str).to_numpy() if groups_column else None
    return Cohort(ids=label_ids.tolist(), X=X, Q=Q, feature_columns=[str(c) for c in feature_columns],
                  qct_columns=qct, y=y, classes=[str(c) for c in classes], groups=groups, laa_pct=laa,
                  unlabelled=int(len(features) - len(labels)))
