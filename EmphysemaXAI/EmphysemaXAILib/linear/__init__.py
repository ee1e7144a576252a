"""Linear models on case embeddings (seed papers 001 and 004): Welch t-test
top-k, LASSO and RFE logistic regressions, embedding-only and fused with QCT markers, validated
by grouped cross-validation with bootstrap intervals. ``fit_linear`` (in ``runs``) is the entry point."""
from .models import QCT_COLUMNS, build_classifier, build_regressor, variant_names
from .runs import fit_linear, predict_linear
from .selection import WelchTopK, welch_scores
from .validate import classification_figures, make_folds, oof_proba, regression_figures

__all__ = ["QCT_COLUMNS", "WelchTopK", "build_classifier", "build_regressor", "classification_figures",
           "fit_linear", "make_folds", "oof_proba", "predict_linear", "regression_figures", "variant_names",
           "welch_scores"]
