"""The ``fit-linear`` run and ``predict_linear``: cross-validate every linear variant on an
embedding table, fit the chosen one on all cases and write the results (docs/contracts.md).

Outputs in ``out_dir`` (written atomically): ``metrics.json``, ``oof_predictions.csv``,
``model.joblib`` (a dict: ``pipeline``, ``input_columns``, ``classes``, ``variant``),
``model.json`` (selected features, standardised coefficients, intercept, scaler mean / scale),
``pca.png``, ``tsne.png``, ``coefficients.png``, ``roc.png``.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io.atomic import atomic_folder
from ..io.files import sha256
from .inputs import Cohort, load_cohort
from .models import BASE_VARIANTS, build_classifier, build_regressor, describe, variant_names
from .plots import plot_coefficients, plot_pca, plot_roc, plot_tsne
from .validate import classification_figures, make_folds, oof_proba, oof_regression, regression_figures

CIRCULARITY_NOTE = ("the QCT markers are input columns: when the labels were computed from QCT (e.g. LAA-950 >= 6%), "
                    "the fused (+qct) and qct-only models predict the labels from the quantity that defined them and "
                    "their figures are circular; the embedding-only model is the honest figure")


def _matrix(cohort: Cohort, variant: str) -> tuple[np.ndarray, list]:
    """The input matrix (n, p) of a variant and its column names."""
    if variant == "qct-only":
        return cohort.Q, list(cohort.qct_columns)
    if variant.endswith("+qct"):
        return np.hstack([cohort.X, cohort.Q]), cohort.feature_columns + cohort.qct_columns
    return cohort.X, list(cohort.feature_columns)


def _classifier(cohort: Cohort, variant: str, k: int, seed: int):
    n_qct = len(cohort.qct_columns) if variant.endswith("+qct") or variant == "qct-only" else 0
    n_features = 0 if variant == "qct-only" else len(cohort.feature_columns)
    return build_classifier(variant, n_features, n_qct, k=k, seed=seed)


def fit_linear(features: pd.DataFrame, labels: pd.DataFrame, out_dir, *, model: str = "ttest-lr",
               cv: str = "kfold", groups_column: str | None = None, fuse_qct: bool = False, k: int = 20,
               n_splits: int = 5, bootstraps: int = 1000, seed: int = 0) -> dict:
    """Cross-validate every variant, fit ``model`` (``+qct`` when ``fuse_qct``) on all cases, write
    ``out_dir``; returns the content of ``metrics.json``. Bad input raises InputError (one line)."""
    started = time.perf_counter()
    if model not in BASE_VARIANTS:
        raise InputError(f"unknown model {model!r}; use one of {', '.join(BASE_VARIANTS)}")
    if int(k) < 1 or int(bootstraps) < 0:
        raise InputError("k must be at least 1 and the bootstrap count at least 0")
    cohort = load_cohort(features, labels, groups_column, require_qct=fuse_qct)
    k = min(int(k), len(cohort.feature_columns))
    splits = make_folds(cohort.y, cohort.groups, cv=cv, n_splits=n_splits, seed=seed)
    fold_of = np.zeros(len(cohort.y), int)
    for fold, (_, test) in enumerate(splits):
        fold_of[test] = fold
    chosen = f"{model}+qct" if fuse_qct else model

    results, probas, timings = {}, {}, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in variant_names(bool(cohort.qct_columns), cohort.laa_pct is not None):
            tic = time.perf_counter()
            X, _ = _matrix(cohort, name)   # laa-regression: the embedding columns
            if name == "laa-regression":
                pred = oof_regression(build_regressor(k), X, cohort.laa_pct, cohort.y, splits)
                results[name] = {"target": "laa_pct", "units": "% of lung",
                                 **regression_figures(cohort.laa_pct, pred, fold_of, n_boot=bootstraps, seed=seed)}
                probas[name] = pred
            else:
                proba, _ = oof_proba(_classifier(cohort, name, k, seed), X, cohort.y, splits)
                results[name] = classification_figures(cohort.y, proba, cohort.classes, fold_of,
                                                       n_boot=bootstraps, seed=seed)
                probas[name] = proba
            timings[name] = round(time.perf_counter() - tic, 2)
        X, columns = _matrix(cohort, chosen)
        final = _classifier(cohort, chosen, k, seed).fit(X, cohort.y)
    description = {"variant": chosen, "input_columns": columns, "classes": cohort.classes,
                   **describe(final, columns, cohort.classes)}

    run = {"n_cases": len(cohort.y), "classes": cohort.classes,
           "class_counts": {c: int(n) for c, n in zip(cohort.classes, np.bincount(cohort.y))},
           "positive_class": cohort.classes[1] if len(cohort.classes) == 2 else None,
           "cv": cv, "n_folds": len(splits), "groups_column": groups_column,
           "n_groups": None if cohort.groups is None else int(len(set(cohort.groups))),
           "k": k, "seed": seed, "bootstraps": bootstraps, "n_features": len(cohort.feature_columns),
           "qct_columns": cohort.qct_columns, "fuse_qct": fuse_qct, "unlabelled_rows_ignored": cohort.unlabelled,
           "timings_s": timings, "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught})}
    if cohort.qct_columns:
        run["circularity_note"] = CIRCULARITY_NOTE
    metrics = {**{key: value for key, value in results[chosen].items()}, "model": chosen, "models": results}

    oof = pd.DataFrame({"id": cohort.ids})
    if cohort.groups is not None:
        oof["group"] = cohort.groups
    oof["label"] = [cohort.classes[i] for i in cohort.y]
    oof["fold"] = fold_of
    oof["predicted"] = [cohort.classes[i] for i in probas[chosen].argmax(axis=1)]
    for i, name in enumerate(cohort.classes):
        oof[f"prob_{name}"] = probas[chosen][:, i]
    if "laa-regression" in probas:
        oof["laa_pct"], oof["laa_pct_oof"] = cohort.laa_pct, probas["laa-regression"]

    import joblib

    with atomic_folder(out_dir) as folder:
        plot_pca(cohort.X, cohort.y, cohort.classes, folder / "pca.png")
        run["tsne_perplexity"] = plot_tsne(cohort.X, cohort.y, cohort.classes, folder / "tsne.png", seed)
        plot_coefficients(description, folder / "coefficients.png", f"final {chosen} model")
        curves = {chosen: probas[chosen], **{n: probas[n] for n in (model, f"{model}+qct", "qct-only")
                                             if n in probas and n != chosen}}
        plot_roc(cohort.y, curves, cohort.classes, folder / "roc.png")
        oof.to_csv(folder / "oof_predictions.csv", index=False)
        joblib.dump({"pipeline": final, "input_columns": columns, "classes": cohort.classes, "variant": chosen},
                    folder / "model.joblib")
        (folder / "model.json").write_text(json.dumps(description, indent=2) + "\n")
        run["model_joblib_sha256"] = sha256(folder / "model.joblib")   # checked before predict_linear unpickles it
        run["duration_s"] = round(time.perf_counter() - started, 1)
        metrics["_run"] = run
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def predict_linear(model_dir, features: pd.DataFrame) -> pd.DataFrame:
    """Apply a ``fit-linear`` model to a features table: ``id``, ``predicted``, ``prob_<class>``.

    ``model.joblib`` is a pickle: it is unpickled only when its SHA-256 equals the one its own
    ``metrics.json`` recorded (a swapped or edited file is refused); load folders you trust."""
    import joblib

    folder = Path(model_dir)
    try:
        expected = json.loads((folder / "metrics.json").read_text())["_run"]["model_joblib_sha256"]
    except (OSError, ValueError, KeyError):
        raise InputError(f"{folder}: not a fit-linear output (metrics.json with the model's SHA-256 missing)") from None
    if sha256(folder / "model.joblib") != expected:
        raise InputError(f"{folder / 'model.joblib'}: SHA-256 differs from metrics.json; the file was changed, refit")
    bundle = joblib.load(folder / "model.joblib")
    missing = [c for c in bundle["input_columns"] if c not in features.columns]
    if missing:
        raise InputError(f"the features table lacks {len(missing)} of the model's columns, e.g. '{missing[0]}'")
    proba = bundle["pipeline"].predict_proba(features[bundle["input_columns"]].to_numpy(float))
    out = pd.DataFrame({"id": features["id"].astype(str) if "id" in features else range(len(features)),
                        "predicted": [bundle["classes"][i] for i in proba.argmax(axis=1)]})
    for i, name in enumerate(bundle["classes"]):
        out[f"prob_{name}"] = proba[:, i]
    return out
