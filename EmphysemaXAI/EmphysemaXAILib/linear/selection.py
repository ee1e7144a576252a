"""Welch's t-test feature selection as a scikit-learn transformer (seed papers 001 and 004).

``WelchTopK(k)`` keeps the ``k`` columns with the largest |t| (scipy ``ttest_ind`` with
``equal_var=False``) between the classes of ``y``. It is fitted like any selector, so inside a
``Pipeline`` it only ever sees the training fold: no selection leakage into the test cases.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted, validate_data


def welch_scores(X, y) -> np.ndarray:
    """|t| of Welch's t-test per column of ``X`` (n, p) between the classes of ``y`` (n,).

    Two classes: |t| of class 0 against class 1. More: the largest |t| over the one-vs-rest tests.
    Columns where t is undefined (constant, or a class with one case) score 0. Returns (p,).
    """
    from scipy.stats import ttest_ind

    X, y = np.asarray(X, float), np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError("Welch's t-test needs at least two classes in y")
    pairs = [(y == classes[0], y == classes[1])] if len(classes) == 2 else [(y == c, y != c) for c in classes]
    scores = np.zeros(X.shape[1])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")   # constant columns: scipy warns and returns NaN
        for a, b in pairs:
            t = np.abs(ttest_ind(X[a], X[b], equal_var=False, axis=0).statistic)
            scores = np.maximum(scores, np.nan_to_num(t, nan=0.0, posinf=0.0))
    return scores


class WelchTopK(SelectorMixin, BaseEstimator):
    """Keep the ``k`` features with the largest Welch |t| (``k`` is clipped to the column count).

    ``fit(X, y, labels=None)``: the test uses ``labels`` when given, else ``y`` (so a regression
    pipeline can select on the class labels and fit its target, ``laa_pct``, on the selection).
    Fitted attributes: ``scores_`` (p,), ``k_`` (the clipped k), ``ranking_`` (column indices,
    best first; ties keep column order).
    """

    def __init__(self, k: int = 20):
        self.k = k

    def fit(self, X, y, labels=None) -> WelchTopK:
        X = validate_data(self, X, reset=True, ensure_all_finite=True)
        target = y if labels is None else labels
        if int(self.k) < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        self.scores_ = welch_scores(X, target)
        self.k_ = min(int(self.k), X.shape[1])
        self.ranking_ = np.argsort(-self.scores_, kind="stable")
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "scores_")
        mask = np.zeros(len(self.scores_), bool)
        mask[self.ranking_[:self.k_]] = True
        return mask

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags
