"""Linear models on embeddings: Welch top-k selection, variants, leak-free
cross-validation, metrics.json contract, bad inputs. Generated data only (seeded numpy)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from EmphysemaXAILib.errors import InputError
from EmphysemaXAILib.linear import (
    QCT_COLUMNS,
    WelchTopK,
    build_classifier,
    classification_figures,
    fit_linear,
    make_folds,
    oof_proba,
    predict_linear,
)
from EmphysemaXAILib.linear.models import selected_columns

SIGNAL = [3, 17, 42, 99, 150]


def signal_data(n=90, p=200, shift=1.5, seed=0):
    """X (n, p) standard normal with the label (0/1, balanced) shifting the SIGNAL columns."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, p))
    X[:, [c for c in SIGNAL if c < p]] += shift * y[:, None]
    return X, y


def tables(X, y, *, qct=True, seed=0, names=("none", "emphysema"), groups_of=2):
    """Features and labels DataFrames as the embed step writes them (QCT columns follow LAA%)."""
    rng = np.random.default_rng(seed + 1)
    n = len(y)
    features = pd.DataFrame(X, columns=[f"f{i:04d}" for i in range(X.shape[1])])
    features.insert(0, "id", [f"case{i:03d}" for i in range(n)])
    laa = np.where(y > 0, rng.uniform(6, 30, n), rng.uniform(0, 6, n))
    if qct:
        features["qct_laa950_pct"] = laa + rng.normal(0, 0.3, n)
        features["qct_perc15_hu"] = -900 - 3 * laa + rng.normal(0, 8, n)
        features["qct_volume_l"] = rng.normal(5.5, 1.0, n)
    labels = pd.DataFrame({"id": features["id"], "label": [names[v] for v in y],
                           "subject": [f"s{i // groups_of:03d}" for i in range(n)], "laa_pct": laa})
    return features, labels


def test_welch_top_k_picks_the_signal_columns_and_clips_k():
    X, y = signal_data()
    selector = WelchTopK(k=5).fit(X, y)
    assert sorted(np.flatnonzero(selector.get_support()).tolist()) == SIGNAL
    assert WelchTopK(k=500).fit(X, y).transform(X).shape == (90, 200)
    constant = np.hstack([X, np.ones((90, 1))])
    assert WelchTopK(k=5).fit(constant, y).scores_[-1] == 0          # NaN t -> 0
    multi = np.repeat([0, 1, 2], 30)
    Xm = np.random.default_rng(1).normal(size=(90, 50))
    Xm[multi == 2, 7] += 2.0                                        # only one-vs-rest sees it
    assert WelchTopK(k=1).fit(Xm, multi).get_support(indices=True).tolist() == [7]


def test_ttest_lr_finds_signal_and_permuted_labels_do_not():
    X, y = signal_data()
    splits = make_folds(y, seed=0)
    proba, _ = oof_proba(build_classifier("ttest-lr", X.shape[1], k=20), X, y, splits)
    real = classification_figures(y, proba, ["0", "1"], n_boot=0)
    y_perm = np.random.default_rng(5).permutation(y)
    proba_perm, _ = oof_proba(build_classifier("ttest-lr", X.shape[1], k=20), X, y_perm, make_folds(y_perm))
    permuted = classification_figures(y_perm, proba_perm, ["0", "1"], n_boot=0)
    assert real["roc_auc"] > 0.9
    assert 0.3 <= permuted["roc_auc"] <= 0.7


def test_selection_inside_folds_does_not_leak():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(40, 2000)), np.repeat([0, 1], 20)
    splits = make_folds(y, seed=0)
    ours, _ = oof_proba(build_classifier("ttest-lr", 2000, k=20), X, y, splits)
    ours_auc = classification_figures(y, ours, ["0", "1"], n_boot=0)["roc_auc"]
    # the leaky way: select on all cases, then cross-validate the classifier alone
    keep = WelchTopK(20).fit(X, y).get_support()
    leaky, _ = oof_proba(build_classifier("qct-only", 0, 0), X[:, keep], y, splits)
    leaky_auc = classification_figures(y, leaky, ["0", "1"], n_boot=0)["roc_auc"]
    assert ours_auc < 0.7 and leaky_auc > 0.9


@pytest.mark.parametrize("cv", ["kfold", "logo"])
def test_folds_never_split_a_group(cv):
    y = np.repeat([0, 1], 30)
    groups = np.array([f"g{i % 12}" for i in range(60)])
    splits = make_folds(y, groups, cv=cv, n_splits=5, seed=0)
    assert len(splits) == (12 if cv == "logo" else 5)
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
    assert sorted(np.concatenate([t for _, t in splits]).tolist()) == list(range(60))
    with pytest.raises(InputError, match="groups"):
        make_folds(y, None, cv="logo")


def test_kfold_clips_splits_to_the_smallest_class():
    y = np.array([0] * 20 + [1] * 3)
    assert len(make_folds(y, n_splits=5)) == 3


@pytest.mark.parametrize("variant", ["ttest-lr+qct", "lasso+qct", "rfe+qct"])
def test_fused_models_contain_the_qct_columns(variant):
    X, y = signal_data(p=120)
    features, _ = tables(X, y)
    matrix = features.drop(columns="id").to_numpy(float)
    names = list(features.columns[1:])
    model = build_classifier(variant, 120, 3, k=10).fit(matrix, y)
    chosen = selected_columns(model, names)
    assert set(QCT_COLUMNS) <= set(chosen)
    assert model[-1].coef_.shape[1] == len(chosen)
    if variant != "lasso+qct":
        assert len(chosen) == 10 + 3


def test_fit_linear_writes_the_contract(tmp_path):
    X, y = signal_data(p=150)
    features, labels = tables(X, y)
    out = tmp_path / "fit"
    m = fit_linear(features, labels, out, groups_column="subject", k=10, bootstraps=200, seed=0)
    for key in ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "per_class", "ci95", "models", "_run"):
        assert key in m
    assert set(m["models"]) == {"ttest-lr", "ttest-lr+qct", "lasso", "lasso+qct", "rfe", "rfe+qct", "qct-only",
                                "laa-regression"}
    assert m["model"] == "ttest-lr" and m["roc_auc"] == m["models"]["ttest-lr"]["roc_auc"] > 0.9
    assert set(m["per_class"]) == {"none", "emphysema"} and m["per_class"]["emphysema"]["support"] == 45
    for key in ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc"):
        low, high = m["ci95"][key]
        assert low <= m[key] <= high
    assert "circularity_note" in m["_run"] and m["_run"]["positive_class"] == "emphysema"
    assert m["models"]["laa-regression"]["spearman"] > 0.3
    assert json.loads((out / "metrics.json").read_text())["roc_auc"] == m["roc_auc"]
    for name in ("oof_predictions.csv", "model.joblib", "model.json", "pca.png", "tsne.png", "coefficients.png",
                 "roc.png"):
        assert (out / name).stat().st_size > 0, name
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert len(oof) == 90 and {"id", "label", "fold", "predicted", "prob_emphysema"} <= set(oof.columns)
    for fold in oof["fold"].unique():                               # groups stay within one fold
        assert not set(oof.loc[oof.fold == fold, "group"]) & set(oof.loc[oof.fold != fold, "group"])
    description = json.loads((out / "model.json").read_text())
    assert len(description["selected_features"]) == len(description["coefficients"]) == 10
    predicted = predict_linear(out, features)
    assert predicted["predicted"].isin(["none", "emphysema"]).all()
    # the refitted model on all cases agrees with the labels it was fitted on far above chance
    assert (predicted["predicted"].to_numpy()
            == labels.set_index("id").loc[predicted["id"], "label"].to_numpy()).mean() > 0.8
    with open(out / "model.joblib", "ab") as handle:               # a changed pickle is never unpickled
        handle.write(b"x")
    with pytest.raises(InputError, match="SHA-256"):
        predict_linear(out, features)


def test_fit_linear_fused_multiclass_and_logo(tmp_path):
    rng = np.random.default_rng(7)
    y = np.repeat([0, 1, 2], 20)
    X = rng.normal(size=(60, 40))
    X[:, :3] += 1.5 * np.eye(3)[y]
    features, labels = tables(X, y, names=("none", "mild", "severe"), groups_of=3)
    labels = labels.drop(columns="laa_pct")
    m = fit_linear(features, labels, tmp_path / "multi", model="lasso", cv="logo", groups_column="subject",
                   fuse_qct=True, k=8, bootstraps=100)
    assert m["model"] == "lasso+qct" and m["_run"]["n_folds"] == 20
    assert m["auc_method"] == "macro average of one-vs-rest"
    assert set(m["per_class"]) == {"none", "mild", "severe"} and m["roc_auc"] > 0.8
    assert "laa-regression" not in m["models"]
    description = json.loads((tmp_path / "multi" / "model.json").read_text())
    assert set(QCT_COLUMNS) <= set(description["selected_features"])
    assert set(description["coefficients"]) == {"none", "mild", "severe"}


def test_same_seed_gives_identical_metrics(tmp_path):
    X, y = signal_data(n=40, p=60)
    features, labels = tables(X, y, qct=False)
    a = fit_linear(features, labels, tmp_path / "a", k=5, bootstraps=100, seed=3)
    b = fit_linear(features, labels, tmp_path / "b", k=5, bootstraps=100, seed=3)
    for run in (a, b):
        run["_run"].pop("timings_s"), run["_run"].pop("duration_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert "circularity_note" not in a["_run"] and "qct-only" not in a["models"]


def test_bad_inputs_raise_input_error(tmp_path):
    X, y = signal_data(n=20, p=10)
    features, labels = tables(X, y, qct=False)
    out = tmp_path / "bad"
    cases = [
        (features, labels.assign(id=labels["id"].str.replace("case000", "nope")), {}, "no features"),
        (features, labels.assign(label="none"), {}, "two classes"),
        (features, labels.assign(label=["a"] + ["b"] * 19), {}, "at least 2 cases"),
        (features.assign(f0001="text"), labels, {}, "non-numeric"),
        (features, labels, {"fuse_qct": True}, "QCT"),
        (features, labels, {"cv": "logo"}, "groups"),
        (features, labels, {"groups_column": "site"}, "site"),
        (features, labels, {"model": "svm"}, "unknown"),
    ]
    for feats, labs, options, message in cases:
        with pytest.raises(InputError, match=message):
            fit_linear(feats, labs, out, bootstraps=0, **options)
    assert not out.exists()


def test_labels_by_image_path_join_on_posix_ids(tmp_path):
    X, y = signal_data(n=20, p=10)
    features, labels = tables(X, y, qct=False)
    features["id"] = [f"site_a/{i}.nrrd" for i in features["id"]]
    paths = [f"site_a\\{i}.nrrd" for i in labels["id"]]
    labels = labels.drop(columns="id").assign(path=paths)
    m = fit_linear(features, labels, tmp_path / "img", k=3, bootstraps=0)
    assert m["_run"]["n_cases"] == 20


def test_bootstrap_auc_forms_equal_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from EmphysemaXAILib.linear.validate import rank_auc, step_average_precision

    rng = np.random.default_rng(11)
    for _ in range(50):
        y = rng.integers(0, 2, 40)
        score = np.round(rng.random(40), 1)                        # many ties
        assert rank_auc(y == 1, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
        assert step_average_precision(y == 1, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)
