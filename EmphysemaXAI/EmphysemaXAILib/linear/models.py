"""The linear model variants of ``fit-linear`` as scikit-learn pipelines (seed papers 001, 004).

Every pipeline takes the full (n, p) matrix of input columns: the embedding feature columns
first, then the QCT marker columns present (``QCT_COLUMNS``). Variants:

- ``ttest-lr``: StandardScaler -> WelchTopK(k) -> LogisticRegression (L2, C=1).
- ``lasso``: StandardScaler -> L1 logistic regression, C chosen by an inner stratified CV on the
  training fold (``L1Logistic``).
- ``rfe``: StandardScaler -> WelchTopK(prefilter=100) -> RFE(LogisticRegression, k) ->
  LogisticRegression.
- ``<variant>+qct``: the same with the QCT columns passed around the selection step
  (``ColumnTransformer``), so the fitted model always contains them.
- ``qct-only``: StandardScaler -> LogisticRegression on the QCT columns alone.
- ``laa-regression``: StandardScaler -> WelchTopK(k, on the class labels) -> RidgeCV, target
  ``laa_pct`` (% of lung), embedding columns only.

Class weights are balanced and every random_state is ``seed``: same input, same output.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import RFE
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .selection import WelchTopK

QCT_COLUMNS = ("qct_laa950_pct", "qct_perc15_hu", "qct_volume_l")
BASE_VARIANTS = ("ttest-lr", "lasso", "rfe")
RFE_PREFILTER = 100
RIDGE_ALPHAS = tuple(np.logspace(-2, 4, 13))


def logistic(seed: int = 0, C: float = 1.0) -> LogisticRegression:
    """L2 logistic regression with balanced class weights (multinomial for > 2 classes). Solver
    newton-cholesky: exact and several times faster than lbfgs on the <= ~100 selected columns it
    sees here (its cost grows with the square of the column count)."""
    return LogisticRegression(C=C, class_weight="balanced", solver="newton-cholesky", max_iter=1000,
                              random_state=seed)


class L1Logistic(ClassifierMixin, BaseEstimator):
    """L1-penalised logistic regression whose C is chosen by an inner CV on the data it is fitted on.

    Inner CV: StratifiedKFold(min(inner_folds, smallest class count), seeded), scored by log loss
    over ``Cs`` values (logspace(-2, 2)). Solver: liblinear for two classes, saga (multinomial)
    for more. When the smallest class has fewer than 2 cases no inner CV is possible and C is fixed
    to ``fallback_C``; ``C_reason_`` says which happened. Exposes ``coef_``, ``intercept_``,
    ``classes_``, ``C_`` like LogisticRegression.
    """

    def __init__(self, Cs: int = 10, inner_folds: int = 3, fallback_C: float = 1.0, seed: int = 0):
        self.Cs = Cs
        self.inner_folds = inner_folds
        self.fallback_C = fallback_C
        self.seed = seed

    def fit(self, X, y) -> L1Logistic:
        y = np.asarray(y)
        self.classes_, counts = np.unique(y, return_counts=True)
        binary = len(self.classes_) == 2
        common = dict(l1_ratio=1.0, class_weight="balanced", random_state=self.seed,
                      solver="liblinear" if binary else "saga", max_iter=5000 if binary else 3000,
                      tol=1e-4 if binary else 1e-3)
        folds = min(int(self.inner_folds), int(counts.min()))
        if folds >= 2:
            inner = StratifiedKFold(folds, shuffle=True, random_state=self.seed)
            cv_model = LogisticRegressionCV(Cs=np.logspace(-2, 2, self.Cs), l1_ratios=(1.0,), cv=inner,
                                            scoring="neg_log_loss", use_legacy_attributes=False,
                                            **{k: v for k, v in common.items() if k != "l1_ratio"})
            cv_model.fit(X, y)
            self.C_ = float(cv_model.C_)
            self.C_reason_ = f"inner {folds}-fold CV (log loss) over {self.Cs} values of C"
        else:
            self.C_ = float(self.fallback_C)
            self.C_reason_ = "fixed: the smallest class has fewer than 2 cases, no inner CV possible"
        self.model_ = LogisticRegression(C=self.C_, **common).fit(X, y)
        self.coef_, self.intercept_ = self.model_.coef_, self.model_.intercept_
        self.n_features_in_ = self.model_.n_features_in_
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self.model_.predict_proba(X)

    def decision_function(self, X) -> np.ndarray:
        return self.model_.decision_function(X)

    def predict(self, X) -> np.ndarray:
        return self.model_.predict(X)


def _selector(base: str, k: int, seed: int):
    """The selection step of a base variant (None for lasso: the L1 penalty selects)."""
    if base == "ttest-lr":
        return WelchTopK(k)
    if base == "rfe":
        return Pipeline([("welch", WelchTopK(max(RFE_PREFILTER, k))),
                         ("rfe", RFE(logistic(seed), n_features_to_select=k, step=0.1))])
    if base == "lasso":
        return None
    raise ValueError(f"unknown model {base!r}; use one of {', '.join(BASE_VARIANTS)}")


def _classifier(base: str, seed: int):
    return L1Logistic(seed=seed) if base == "lasso" else logistic(seed)


def build_classifier(variant: str, n_features: int, n_qct: int = 0, *, k: int = 20, seed: int = 0) -> Pipeline:
    """The pipeline of ``variant`` for an input matrix of ``n_features`` embedding columns followed
    by ``n_qct`` QCT columns (``qct-only`` expects the QCT columns alone: ``n_features`` = 0)."""
    if variant == "qct-only":
        return Pipeline([("scale", StandardScaler()), ("model", logistic(seed))])
    base, fused = variant.removesuffix("+qct"), variant.endswith("+qct")
    if fused and not n_qct:
        raise ValueError(f"{variant} needs QCT columns")
    select = _selector(base, k, seed)
    steps = [("scale", StandardScaler())]
    if fused:
        embedding = list(range(n_features))
        qct = list(range(n_features, n_features + n_qct))
        steps.append(("select", ColumnTransformer([("embedding", select or "passthrough", embedding),
                                                   ("qct", "passthrough", qct)],
                                                  verbose_feature_names_out=False)))
    elif select is not None:
        steps.append(("select", select))
    steps.append(("model", _classifier(base, seed)))
    return Pipeline(steps)


def build_regressor(k: int = 20) -> Pipeline:
    """``laa-regression``: fit with ``fit(X, laa_pct, select__labels=class_labels)``."""
    return Pipeline([("scale", StandardScaler()), ("select", WelchTopK(k)),
                     ("model", RidgeCV(alphas=RIDGE_ALPHAS))])


def variant_names(has_qct: bool, has_laa: bool) -> list[str]:
    """Every variant ``fit-linear`` fits for the input at hand, in report order."""
    names = []
    for base in BASE_VARIANTS:
        names += [base, f"{base}+qct"] if has_qct else [base]
    return names + (["qct-only"] if has_qct else []) + (["laa-regression"] if has_laa else [])


def selected_columns(pipeline: Pipeline, names) -> list[str]:
    """Names of the columns reaching the final estimator of a fitted pipeline, in its order."""
    return [str(n) for n in pipeline[:-1].get_feature_names_out(np.asarray(names, object))]


def describe(pipeline: Pipeline, names, classes) -> dict:
    """A readable account of a fitted classifier pipeline: selected columns, standardised
    coefficients (per class when > 2 classes), intercept, scaler mean / scale of those columns."""
    names = [str(n) for n in names]
    chosen = selected_columns(pipeline, names)
    scaler, model = pipeline.named_steps["scale"], pipeline[-1]
    where = [names.index(c) for c in chosen]
    coef = np.asarray(model.coef_, float)
    out = {"selected_features": chosen,
           "scaler_mean": [float(scaler.mean_[i]) for i in where],
           "scaler_scale": [float(scaler.scale_[i]) for i in where]}
    classes = [str(c) for c in classes]
    if coef.shape[0] == 1:
        out["positive_class"] = classes[1]
        out["coefficients"] = [float(v) for v in coef[0]]
        out["intercept"] = float(np.ravel(model.intercept_)[0])
    else:
        out["coefficients"] = {c: [float(v) for v in row] for c, row in zip(classes, coef)}
        out["intercept"] = {c: float(v) for c, v in zip(classes, np.ravel(model.intercept_))}
    out["nonzero_features"] = [c for c, used in zip(chosen, np.any(coef != 0, axis=0)) if used]
    if hasattr(model, "C_"):
        out["C"], out["C_reason"] = model.C_, model.C_reason_
    return out


