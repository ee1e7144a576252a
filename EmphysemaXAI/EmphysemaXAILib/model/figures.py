"""Evaluation figures of severity predictions: metrics of prediction rows, the by-acquisition
table, the predictions CSV and the training log, as the ``train`` and ``evaluate`` runs write them.

A prediction row is a dict per case: ``name``, ``subject``, ``label`` (class name or None),
``class``, ``extent_true`` (None when unknown), ``extent_pct``, optional ``naive_laa950_pct``,
``dose`` / ``kernel`` / ``pattern`` (phantoms), ``p_<class>``, ``head_probabilities``,
``low_confidence``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..analysis.severity import SEVERITY_CLASSES, SEVERITY_CUTPOINTS
from ..phantom.params import DOSES, KERNELS
from .case_extent import class_probabilities
from .metrics import case_metrics

#: columns of ``predictions.csv`` / ``predictions_test.csv``
PREDICTION_COLUMNS = (["name", "subject", "label", "class", "extent_true", "extent_pct", "naive_laa950_pct",
                       "dose", "kernel", "pattern"] + [f"p_{c}" for c in SEVERITY_CLASSES] + ["low_confidence"])


def case_figures(rows: list, sigma: float, cutpoints=SEVERITY_CUTPOINTS, seed: int = 0) -> dict:
    """The figures of :func:`~.metrics.case_metrics` for prediction rows with a known class
    (class probabilities from each row's extent and ``sigma``), plus the class head's accuracy
    when every row has its probabilities; ``{"n": 0}`` without labelled rows."""
    known = [r for r in rows if r.get("label") is not None]
    if not known:
        return {"n": 0}
    proba = np.array([list(class_probabilities(r["extent_pct"], sigma, cutpoints).values()) for r in known])
    extent = [r for r in known if r.get("extent_true") is not None]
    same = len(extent) == len(known)
    out = case_metrics([r["label"] for r in known], [r["class"] for r in known], proba,
                       [r["extent_true"] for r in known] if same else None,
                       [r["extent_pct"] for r in known] if same else None, cutpoints=cutpoints, seed=seed)
    head = (np.array([r["head_probabilities"] for r in known])
            if all(r.get("head_probabilities") is not None for r in known) else None)
    if head is not None:
        truth = [SEVERITY_CLASSES.index(r["label"]) for r in known]
        out["class_head"] = {"accuracy": float(np.mean(head.argmax(1) == np.array(truth)))}
    return out


def head_probabilities(summary: dict) -> list | None:
    """The severity model's attention-pooled class head (4,), None for a pattern model."""
    return list(summary["class_head"].values()) if "class_head" in summary else None


def summary_fields(summary: dict) -> dict:
    """The prediction-row fields of a predictor's case summary (either model kind)."""
    return {"extent_pct": summary["extent_pct"], "class": summary["class"],
            "low_confidence": summary["low_confidence"],
            **{f"p_{k}": v for k, v in summary["probabilities"].items()},
            "head_probabilities": head_probabilities(summary)}


def by_acquisition(rows: list) -> dict:
    """Extent MAE of the model and of naive %LAA-950 per dose x kernel, and the ratio."""
    out = {}
    for dose in DOSES:
        for kernel in KERNELS:
            group = [r for r in rows if r.get("dose") == dose and r.get("kernel") == kernel]
            if group:
                model = float(np.mean([abs(r["extent_pct"] - r["extent_true"]) for r in group]))
                naive = float(np.mean([abs(r["naive_laa950_pct"] - r["extent_true"]) for r in group]))
                out[f"{dose}/{kernel}"] = {"n": len(group), "model_mae": model, "naive_laa950_mae": naive,
                                           "ratio": model / naive if naive > 0 else None}
    return out


def write_predictions(rows: list, path: Path) -> None:
    """The prediction rows as CSV (:data:`PREDICTION_COLUMNS`, floats rounded to 4 decimals)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, PREDICTION_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})


def write_training_log(histories: dict, folder: Path) -> None:
    """``log.csv`` (one row per stage and epoch) and ``training_curve.png`` (one panel per stage)
    of ``histories`` ({stage name: per-epoch dicts}) into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"stage": stage, **row} for stage, history in histories.items() for row in history]
    columns = sorted({k for row in rows for k in row}, key=lambda k: (k != "stage", k != "epoch", k))
    with open(folder / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.4), squeeze=False)
    for ax, (stage, history) in zip(axes[0], histories.items()):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["train_loss"] for r in history], label="training")
        ax.plot(epochs, [r["val_loss"] for r in history], label="validation")
        best = int(np.argmin([r["val_loss"] for r in history]))
        ax.axvline(epochs[best], color="gray", ls=":", label="best (kept)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(stage, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "training_curve.png", dpi=80)
    plt.close(fig)
