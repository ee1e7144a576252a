"""Cross-validation of the linear variants: folds, out-of-fold predictions, figures with CIs.

Labels are class indices 0..C-1 (for two classes, 1 is the positive class). Folds come from
``make_folds``: ``kfold`` is StratifiedGroupKFold when groups are given (no group in both train
and test) else StratifiedKFold, with n_splits clipped to the smallest class count; ``logo`` is
LeaveOneGroupOut. Every estimator is cloned and fitted on the training part of each fold only.
Figures are computed on the pooled out-of-fold predictions, with percentile bootstrap 95%
intervals (``model.metrics.bootstrap_ci``, resampling cases).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import clone

from ..errors import InputError
from ..model.metrics import bootstrap_ci, rank_auc

CLASSIFICATION_CI_KEYS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc")
REGRESSION_CI_KEYS = ("mae", "r2", "spearman")


def make_folds(y, groups=None, *, cv: str = "kfold", n_splits: int = 5, seed: int = 0) -> list:
    """List of (train_idx, test_idx) int arrays covering every case once as test.

    y: (n,) class indices; groups: (n,) or None. Raises InputError when the folds cannot be made
    (logo without groups, fewer than 2 folds possible, a training part missing a class).
    """
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    n = len(y)
    if cv == "logo":
        if groups is None:
            raise InputError("cv=logo needs groups: give groups_column "
                             "(--groups-column NAME, a column of the labels CSV)")
        if len(np.unique(groups)) < 2:
            raise InputError("cv=logo needs at least 2 groups in the groups column")
        splits = list(LeaveOneGroupOut().split(np.zeros(n), y, groups))
    elif cv == "kfold":
        smallest = int(np.bincount(y).min())
        k = min(int(n_splits), smallest, len(np.unique(groups)) if groups is not None else n)
        if k < 2:
            raise InputError(f"cannot make 2 cross-validation folds (smallest class has {smallest} cases"
                             + (f", {len(np.unique(groups))} groups" if groups is not None else "") + ")")
        if groups is None:
            splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y))
        else:
            splits = list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y, groups))
    else:
        raise InputError(f"unknown cv {cv!r}; use kfold or logo")
    check_folds(splits, y, groups)
    return splits


def check_folds(splits, y, groups=None) -> None:
    """Assert every case is tested exactly once and no group straddles train and test; raise
    InputError when a training part lacks a class (the model could not predict it)."""
    y = np.asarray(y)
    tested = np.concatenate([test for _, test in splits])
    if sorted(tested.tolist()) != list(range(len(y))):
        raise AssertionError("the folds do not test every case exactly once")
    for fold, (train, test) in enumerate(splits):
        if groups is not None:
            shared = set(np.asarray(groups)[train]) & set(np.asarray(groups)[test])
            if shared:
                raise AssertionError(f"fold {fold}: groups in both train and test: {sorted(shared)[:5]}")
        if len(np.unique(y[train])) < len(np.unique(y)):
            raise InputError(f"fold {fold}: its training part lacks a class (the groups hold whole classes); "
                             "use cv=kfold, fewer folds or more cases")


def oof_proba(estimator, X, y, splits) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold class probabilities (n, C) and the fold index of every case (n,)."""
    X, y = np.asarray(X, float), np.asarray(y)
    proba = np.zeros((len(y), len(np.unique(y))))
    fold_of = np.zeros(len(y), int)
    for fold, (train, test) in enumerate(splits):
        model = clone(estimator).fit(X[train], y[train])
        proba[test] = model.predict_proba(X[test])
        fold_of[test] = fold
    return proba, fold_of


def oof_regression(estimator, X, target, labels, splits) -> np.ndarray:
    """Out-of-fold predictions (n,) of a regression pipeline whose ``select`` step is fitted on
    the class ``labels`` of the training part (``models.build_regressor``)."""
    X, target, labels = np.asarray(X, float), np.asarray(target, float), np.asarray(labels)
    pred = np.zeros(len(target))
    for train, test in splits:
        model = clone(estimator).fit(X[train], target[train], select__labels=labels[train])
        pred[test] = model.predict(X[test])
    return pred


def step_average_precision(positive, score) -> float:
    """Average precision, sum over thresholds of (R_i - R_{i-1}) P_i, one threshold per distinct
    score: equal to ``average_precision_score``."""
    positive = np.asarray(positive, bool)
    order = np.argsort(-np.asarray(score, float), kind="mergesort")
    score, positive = np.asarray(score, float)[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]      # end of each run of ties
    tp = np.cumsum(positive)[last]
    precision, recall = tp / (last + 1), tp / positive.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _scores(y, proba, n_classes: int, fast: bool = False) -> dict:
    """accuracy, balanced_accuracy, roc_auc, pr_auc of class indices y (m,) and proba (m, C);
    the AUCs are None when y lacks a class. ``fast``: the exact numpy forms of the AUCs (for the
    bootstrap, where sklearn's input checks dominate); otherwise sklearn's."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    pred = proba.argmax(axis=1)
    present = np.unique(y)
    # accuracy_score / balanced_accuracy_score by their definitions (same reason as ``fast``)
    recalls = [np.mean(pred[y == c] == c) for c in present]
    out = {"accuracy": float(np.mean(pred == y)), "balanced_accuracy": float(np.mean(recalls)),
           "roc_auc": None, "pr_auc": None}
    if len(present) < 2:
        return out
    auc, ap = (rank_auc, step_average_precision) if fast else (roc_auc_score, average_precision_score)
    if n_classes == 2:
        out["roc_auc"] = float(auc(y == 1, proba[:, 1]))
        out["pr_auc"] = float(ap(y == 1, proba[:, 1]))
    elif len(present) == n_classes:            # macro one-vs-rest, as roc_auc_score(multi_class="ovr")
        out["roc_auc"] = float(np.mean([auc(y == c, proba[:, c]) for c in range(n_classes)]))
        out["pr_auc"] = float(np.mean([ap(y == c, proba[:, c]) for c in range(n_classes)]))
    return out


def classification_figures(y, proba, class_names, fold_of=None, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Figures of pooled out-of-fold predictions: accuracy, balanced_accuracy, roc_auc, pr_auc
    (binary: of class_names[1]; > 2 classes: macro one-vs-rest, ``auc_method`` says which),
    per_class (precision, recall, f1, support), ci95 (bootstrap over cases) and per_fold."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y, proba = np.asarray(y), np.asarray(proba, float)
    n_classes = len(class_names)
    out = _scores(y, proba, n_classes)
    out["auc_method"] = (f"binary, positive class {class_names[1]!s}" if n_classes == 2
                         else "macro average of one-vs-rest")
    p, r, f, support = precision_recall_fscore_support(y, proba.argmax(axis=1), labels=range(n_classes),
                                                       zero_division=0)
    out["per_class"] = {str(c): {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                 "support": int(support[i])} for i, c in enumerate(class_names)}
    out["confusion"] = confusion_matrix(y, proba.argmax(axis=1), labels=range(n_classes)).tolist()
    out["ci95"] = bootstrap_ci(lambda idx: _scores(y[idx], proba[idx], n_classes, fast=True), len(y),
                               CLASSIFICATION_CI_KEYS, n_boot=n_boot, seed=seed)
    out["bootstrap"] = n_boot
    if fold_of is not None:
        out["per_fold"] = _per_fold(fold_of, lambda test: _scores(y[test], proba[test], n_classes))
    return out


def _regression_scores(true, pred) -> dict:
    from scipy.stats import spearmanr
    from sklearn.metrics import mean_absolute_error, r2_score

    out = {"mae": float(mean_absolute_error(true, pred)), "r2": None, "spearman": None}
    if len(true) > 2 and np.ptp(true) > 0:
        out["r2"] = float(r2_score(true, pred))
        rho = float(spearmanr(true, pred).statistic)
        out["spearman"] = rho if np.isfinite(rho) else None   # constant predictions: undefined
    return out


def regression_figures(true, pred, fold_of=None, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """MAE (units of the target, here % of lung), R2 and Spearman rho of out-of-fold predictions,
    with ci95 (bootstrap over cases) and per_fold."""
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    out = _regression_scores(true, pred)
    out["ci95"] = bootstrap_ci(lambda idx: _regression_scores(true[idx], pred[idx]), len(true),
                               REGRESSION_CI_KEYS, n_boot=n_boot, seed=seed)
    out["bootstrap"] = n_boot
    if fold_of is not None:
        out["per_fold"] = _per_fold(fold_of, lambda test: _regression_scores(true[test], pred[test]))
    return out


def _per_fold(fold_of: np.ndarray, scores) -> list:
    """One entry per fold: ``fold``, ``n_test`` and ``scores(test_mask)`` of its test cases."""
    return [{"fold": int(k), "n_test": int((fold_of == k).sum()), **scores(fold_of == k)}
            for k in np.unique(fold_of)]
