"""Case-level metrics of a severity model (scikit-learn / scipy), with bootstrap 95% intervals,
and their plots (confusion matrix, one-vs-rest ROC curves).

Inputs are per-case arrays: true and predicted class names (``SEVERITY_CLASSES``), class
probabilities (n, 4), true and predicted extents (% of lung). "Clear" cases are those whose true
extent lies at least ``margin`` points from every cutpoint (``docs/severity.md``).
"""
from __future__ import annotations

import numpy as np

from ..analysis.severity import SEVERITY_CLASSES, SEVERITY_CUTPOINTS


def _classification(y_true, y_pred, proba) -> dict:
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    labels = list(range(len(SEVERITY_CLASSES)))
    out = {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred)),
           "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else None}
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, labels=sorted(set(y_true)), average="macro",
                                                    zero_division=0)
    out.update(precision_macro=float(mp), recall_macro=float(mr), f1_macro=float(mf))
    out["per_class"] = {}
    for k, name in enumerate(SEVERITY_CLASSES):
        entry = {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(support[k]),
                 "roc_auc": None, "pr_auc": None}
        positive = np.asarray(y_true) == k
        if proba is not None and 0 < positive.sum() < len(positive):
            entry["roc_auc"] = float(roc_auc_score(positive, proba[:, k]))
            entry["pr_auc"] = float(average_precision_score(positive, proba[:, k]))
        out["per_class"][name] = entry
    aucs = [e["roc_auc"] for e in out["per_class"].values() if e["roc_auc"] is not None]
    prs = [e["pr_auc"] for e in out["per_class"].values() if e["pr_auc"] is not None]
    out["roc_auc_ovr_macro"] = float(np.mean(aucs)) if aucs else None
    out["pr_auc_ovr_macro"] = float(np.mean(prs)) if prs else None
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    both = len(set(y_true) | set(y_pred)) > 1
    out["weighted_kappa_quadratic"] = (float(cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic"))
                                       if both else None)
    out["weighted_kappa_linear"] = (float(cohen_kappa_score(y_true, y_pred, labels=labels, weights="linear"))
                                    if both else None)
    return out


def rank_auc(positive, score) -> float:
    """ROC-AUC by the Mann-Whitney rank sum (ties get average ranks): equal to ``roc_auc_score``."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _bootstrap_classification(y_true, y_pred, proba) -> dict:
    """The classification figures of ``BOOTSTRAP_KEYS`` by their numpy definitions, equal to
    ``_classification``'s scikit-learn ones: inside the bootstrap (1000 draws) scikit-learn's input
    checks cost ~30 ms a draw (``linear.validate`` does the same for its intervals)."""
    n_classes = len(SEVERITY_CLASSES)
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (y_true, y_pred), 1)
    true_sum, pred_sum, tp = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    present = true_sum > 0
    out = {"accuracy": float(np.mean(y_true == y_pred)),
           "balanced_accuracy": float(np.mean(tp[present] / true_sum[present])),
           "f1_macro": float(np.mean(2 * tp[present] / (true_sum[present] + pred_sum[present])))}
    out["weighted_kappa_quadratic"] = None
    if len(set(y_true) | set(y_pred)) > 1:   # cohen_kappa_score(weights="quadratic")
        weights = (np.arange(n_classes)[None, :] - np.arange(n_classes)[:, None]) ** 2.0
        expected = np.outer(pred_sum, true_sum) / confusion.sum()
        denominator = np.sum(weights * expected)
        out["weighted_kappa_quadratic"] = (float(1 - np.sum(weights * confusion) / denominator)
                                           if denominator != 0 else np.nan)
    aucs = []
    for k in range(n_classes):
        positive = y_true == k
        if proba is not None and 0 < positive.sum() < len(positive):
            aucs.append(rank_auc(positive, proba[:, k]))
    out["roc_auc_ovr_macro"] = float(np.mean(aucs)) if aucs else None
    return out


def _regression(extent_true, extent_pred) -> dict:
    from scipy.stats import spearmanr

    error = np.asarray(extent_pred) - np.asarray(extent_true)
    out = {"extent_mae": float(np.abs(error).mean()), "extent_rmse": float(np.sqrt((error ** 2).mean())),
           "extent_bias": float(error.mean()), "extent_max_abs_error": float(np.abs(error).max())}
    out["extent_spearman"] = float(spearmanr(extent_true, extent_pred).statistic) if len(error) > 2 else None
    return out


def clear_of_cutpoints(extent_true, margin: float = 2.0, cutpoints=SEVERITY_CUTPOINTS) -> np.ndarray:
    """True where the extent is at least ``margin`` points from every cutpoint."""
    bounds = np.array([b for b, _ in cutpoints])
    return np.abs(np.asarray(extent_true, float)[:, None] - bounds[None]).min(axis=1) >= margin


BOOTSTRAP_KEYS = ("accuracy", "balanced_accuracy", "f1_macro", "weighted_kappa_quadratic", "roc_auc_ovr_macro",
                  "extent_mae", "extent_rmse", "extent_spearman", "accuracy_clear")


def bootstrap_ci(compute, n: int, keys, *, n_boot: int = 1000, seed: int = 0, min_draws: int = 10) -> dict:
    """Percentile bootstrap 95% intervals, resampling the ``n`` cases with replacement.

    ``compute(idx)`` returns a dict of figures for the cases ``idx`` (an int array of length n);
    for each of ``keys``, draws that are None or not finite (e.g. an AUC on a resample holding one
    class) are skipped, and a key gets ``[low, high]`` only with at least ``min_draws`` valid draws.
    The draws are seeded (``seed``): same inputs, same intervals.
    """
    import warnings

    everything = np.arange(n)
    rng = np.random.default_rng([seed, 95])
    draws = {k: [] for k in keys}
    for _ in range(n_boot if n > 1 else 0):
        sample = rng.choice(everything, n, replace=True)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            boot = compute(sample)
        for k in keys:
            if boot.get(k) is not None and np.isfinite(boot[k]):
                draws[k].append(boot[k])
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
            for k, v in draws.items() if len(v) >= min_draws}


def case_metrics(y_true, y_pred, proba=None, extent_true=None, extent_pred=None, *, margin: float = 2.0,
                 cutpoints=SEVERITY_CUTPOINTS, n_boot: int = 1000, seed: int = 0) -> dict:
    """Every figure of the model evaluation with ``ci95`` (percentile bootstrap over cases, ``n_boot`` draws).

    y_true / y_pred: class names or indices; proba: (n, 4) or None; extents in % of lung or None.
    """
    index = {name: i for i, name in enumerate(SEVERITY_CLASSES)}
    y_true = np.array([index.get(y, y) for y in y_true], int)
    y_pred = np.array([index.get(y, y) for y in y_pred], int)
    proba = None if proba is None else np.asarray(proba, float)
    has_extent = extent_true is not None and extent_pred is not None
    if has_extent:
        extent_true, extent_pred = np.asarray(extent_true, float), np.asarray(extent_pred, float)

    def compute(idx, classification=_classification) -> dict:
        out = classification(y_true[idx], y_pred[idx], None if proba is None else proba[idx])
        if has_extent:
            out.update(_regression(extent_true[idx], extent_pred[idx]))
            clear = clear_of_cutpoints(extent_true[idx], margin, cutpoints)
            out["n_clear"] = int(clear.sum())
            out["accuracy_clear"] = float((y_true[idx][clear] == y_pred[idx][clear]).mean()) if clear.any() else None
        return out

    result = compute(np.arange(len(y_true)))
    result["ci95"] = bootstrap_ci(lambda idx: compute(idx, _bootstrap_classification), len(y_true), BOOTSTRAP_KEYS,
                                  n_boot=n_boot, seed=seed)
    result["margin_points"] = margin
    result["bootstrap"] = n_boot
    return result


def plot_confusion(confusion, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(SEVERITY_CLASSES)), SEVERITY_CLASSES)
    ax.set_yticks(range(len(SEVERITY_CLASSES)), SEVERITY_CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "severity: confusion matrix", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_roc(y_true, proba, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    index = {name: i for i, name in enumerate(SEVERITY_CLASSES)}
    y_true = np.array([index.get(y, y) for y in y_true], int)
    proba = np.asarray(proba, float)
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    for k, name in enumerate(SEVERITY_CLASSES):
        positive = y_true == k
        if 0 < positive.sum() < len(positive):
            fpr, tpr, _ = roc_curve(positive, proba[:, k])
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(positive, proba[:, k]):.3f})")
    ax.plot([0, 1], [0, 1], color="gray", ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "one-vs-rest ROC", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
