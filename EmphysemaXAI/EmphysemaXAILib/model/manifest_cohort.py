"""Users' labelled cohorts: the manifest CSV (``contracts.md``), case bags, k-fold training.

Manifest columns: ``path`` (any input ``read_ct`` takes; relative paths are relative to the
manifest), optional ``lung_mask`` (label map on the CT grid; else the lungs are segmented with
the ``auto`` engine), ``label`` (a severity class name) and / or ``extent_pct``, and ``subject``
(cases of one subject never straddle a split).
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_folder
from ..errors import InputError
from ..analysis.severity import SEVERITY_CLASSES, severity_class


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

    from ..io.read import read_ct
    from ..segmentation import load_mask, segment_lungs
    from .fit import case_bag

    bags = []
    for row in tqdm(rows, desc="cases", disable=not progress):
        ct = read_ct(row["path"])
        labels = load_mask(row["lung_mask"], ct) if row["lung_mask"] else segment_lungs(ct).labels
        extent = row["extent_pct"] if row["extent_pct"] is not None else float("nan")
        bags.append(case_bag(ct, labels, Path(row["path"]).name, row["subject"], size, slices, extent,
                             SEVERITY_CLASSES.index(row["label"]), {}))
    return bags


def _fine_tune(init, bags_train, bags_val, epochs, seed, device, progress):
    from .checkpoint import SEVERITY_V1_DIR, load_model
    from .fit import train_case_model

    model, config = load_model(init if init is not None else SEVERITY_V1_DIR)
    if config["architecture"].get("kind") == "pattern":
        raise InputError(f"--init {init}: a pattern model cannot be fine-tuned on case labels yet; "
                         "omit --init (the shipped severity model v1) or give a severity model folder")
    history = train_case_model(model, bags_train, bags_val, epochs=epochs, freeze_encoder=False, lr=3e-4,
                               seed=seed, device=device, progress=progress)
    return model.cpu().eval(), config, history


def train_manifest(manifest, out, *, init=None, folds: int = 5, seed: int = 0, epochs: int = 20, device: str = "auto",
                   progress: bool = True, command: str | None = None) -> dict:
    """Fine-tune ``init`` (None: the shipped severity model v1) on a cohort: k-fold out-of-fold figures
    (``folds`` >= 2; 0 skips) and a final model on a 70/15/15 split by subject."""
    from sklearn.model_selection import StratifiedGroupKFold

    from .checkpoint import load_model, save_model
    from .experiment import ARCHITECTURE, _figures, _sigma, _write_log, _write_predictions
    from .fit import fit_calibration, predict_bags, split_subjects
    from .train import pick_device

    started = time.perf_counter()
    _, init_config = load_model(init)
    arch = init_config["architecture"]
    if arch != ARCHITECTURE and init is None:
        raise InputError("the shipped model's architecture does not match this version; reinstall the package")
    bags = manifest_bags(read_manifest(manifest), arch["size"], arch["slices"], progress)
    subjects = [b.subject for b in bags]
    dev = pick_device(device)
    metrics = {"cases": len(bags), "subjects": len(set(subjects))}
    if folds:
        if len(set(subjects)) < folds:
            raise InputError(f"{len(set(subjects))} subjects cannot make {folds} folds; use --folds {len(set(subjects))} or fewer")
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        labels = [b.label for b in bags]
        oof = []
        for fold, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(bags)), labels, subjects)):
            inner = split_subjects([subjects[i] for i in train_idx], seed + fold, (0.85, 0.15, 0.0))
            train = [bags[train_idx[i]] for i in inner["train"]]
            val = [bags[train_idx[i]] for i in inner["val"]]
            model, _, _ = _fine_tune(init, train, val, epochs, seed + fold, dev, progress)
            rows = predict_bags(model, [bags[i] for i in test_idx])
            oof.extend({**r, "fold": fold} for r in rows)
        metrics["cv"] = {"folds": folds, **_figures(oof, _sigma(oof) if oof[0]["extent_true"] is not None
                                                     else init_config.get("extent_sigma", 1.0), seed=seed)}
    split = split_subjects(subjects, seed)
    parts = {k: [bags[i] for i in v] for k, v in split.items()}
    model, _, history = _fine_tune(init, parts["train"], parts["val"], epochs, seed, dev, progress)
    calibration = fit_calibration(predict_bags(model, parts["val"]))   # identity without known extents
    rows = {k: predict_bags(model, parts[k], calibration=calibration) for k in ("val", "test")}
    known = [r for r in rows["val"] if r["extent_true"] is not None]
    sigma = _sigma(known) if known else float(init_config.get("extent_sigma", 1.0))
    metrics["test"] = _figures(rows["test"], sigma, seed=seed)
    metrics["split"] = {k: len(v) for k, v in split.items()}
    config = {**{k: v for k, v in init_config.items() if k not in ("weights_sha256", "training")},
              "name": f"severity-{Path(manifest).stem}-seed{seed}", "extent_sigma": sigma,
              "extent_calibration": list(calibration),
              "training": {"source": "manifest", "manifest": str(manifest), "init": init_config.get("name"),
                           "init_sha256": init_config["weights_sha256"], "seed": seed, "folds": folds,
                           "epochs": epochs, "split": metrics["split"], "command": command}}
    with atomic_folder(out) as folder:
        metrics["training_s"] = round(time.perf_counter() - started, 1)
        save_model(model, config, folder)
        _write_log({"cases (end to end)": history}, folder)
        _write_predictions(rows["test"], folder / "predictions_test.csv")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate_manifest_rows(predictor, manifest, progress: bool = True) -> list:
    """Predictions for every manifest case with the given predictor (either model kind)."""
    from tqdm import tqdm

    from ..io.read import read_ct
    from ..segmentation import load_mask, segment_lungs
    from .experiment import head_probabilities

    rows = []
    for row in tqdm(read_manifest(manifest), desc="cases", disable=not progress):
        ct = read_ct(row["path"])
        labels = load_mask(row["lung_mask"], ct) if row["lung_mask"] else segment_lungs(ct).labels
        summary = predictor.predict(ct, labels).summary
        lung = labels > 0
        rows.append({"name": Path(row["path"]).name, "subject": row["subject"], "label": row["label"],
                     "extent_true": row["extent_pct"], "naive_laa950_pct": float(100.0 * (ct.hu[lung] <= -950).mean()),
                     "extent_pct": summary["extent_pct"], "class": summary["class"],
                     "low_confidence": summary["low_confidence"],
                     **{f"p_{k}": v for k, v in summary["probabilities"].items()},
                     "head_probabilities": head_probabilities(summary)})
    return rows
