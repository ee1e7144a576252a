"""Figures of ``fit-linear`` (matplotlib, Agg): PCA and t-SNE maps of the standardised features
coloured by label, the coefficients of the final model, out-of-fold ROC curves."""
from __future__ import annotations

import numpy as np

from .models import QCT_COLUMNS

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")
QCT_COLOUR, EMBEDDING_COLOUR = "#e6550d", "#3182bd"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scatter(points, y, classes, path, title: str, axis: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for i, name in enumerate(classes):
        here = np.asarray(y) == i
        ax.scatter(points[here, 0], points[here, 1], s=22, alpha=0.8, color=COLOURS[i % len(COLOURS)],
                   edgecolor="white", linewidth=0.4, label=f"{name} (n={int(here.sum())})")
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, title="label", title_fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pca(X, y, classes, path) -> None:
    """PCA (2 components) of the standardised features X (n, p); y: class indices (n,)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    Z = StandardScaler().fit_transform(np.asarray(X, float))
    pca = PCA(n_components=2, random_state=0).fit(Z)
    ratio = pca.explained_variance_ratio_ * 100
    _scatter(pca.transform(Z), y, classes, path,
             f"PCA of {Z.shape[1]} standardised features, n={len(Z)}\n"
             f"(PC1 {ratio[0]:.1f}%, PC2 {ratio[1]:.1f}% of variance)", "PC")


def plot_tsne(X, y, classes, path, seed: int = 0) -> float:
    """t-SNE (2D) of the standardised features (reduced to <= 50 PCA components first);
    perplexity min(30, n - 1). Returns the perplexity used."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    Z = StandardScaler().fit_transform(np.asarray(X, float))
    if Z.shape[1] > 50 and len(Z) > 50:
        Z = PCA(n_components=50, random_state=seed).fit_transform(Z)
    perplexity = float(max(1, min(30, len(Z) - 1)))
    from threadpoolctl import threadpool_limits

    # one OpenMP thread: on a loaded 2-core machine the Barnes-Hut threads spin-wait (13 s instead
    # of 0.2 s for 60 cases); the result is the same
    with threadpool_limits(limits=1, user_api="openmp"):
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(Z)
    _scatter(points, y, classes, path, f"t-SNE of standardised features, n={len(Z)} (perplexity {perplexity:g})",
             "t-SNE")
    return perplexity


def plot_coefficients(description: dict, path, title: str, top: int = 30) -> None:
    """Horizontal bars of the standardised coefficients of a fitted model (``models.describe``):
    the ``top`` largest |coefficient| per class, QCT markers in orange."""
    plt = _pyplot()
    coef = description["coefficients"]
    panels = ({f"toward {description['positive_class']}": coef} if isinstance(coef, list)
              else {f"class {k}": v for k, v in coef.items()})
    names = description["selected_features"]
    matrix = np.atleast_2d(np.asarray(list(panels.values()), float))
    shown = np.flatnonzero(np.any(matrix != 0, axis=0))             # L1 zeros are not drawn
    zero = len(names) - len(shown)
    height = max(2.6, 0.22 * min(top, len(shown)) + 1.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), height), squeeze=False)
    for ax, (panel, values) in zip(axes[0], panels.items()):
        values = np.asarray(values, float)
        order = shown[np.argsort(-np.abs(values[shown]), kind="stable")][:top][::-1]
        colours = [QCT_COLOUR if names[i] in QCT_COLUMNS else EMBEDDING_COLOUR for i in order]
        ax.barh(range(len(order)), values[order], color=colours)
        ax.set_yticks(range(len(order)), [names[i] for i in order], fontsize=7)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("coefficient (per SD of the feature)", fontsize=8)
        ax.set_title(panel, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    note = f"; {zero} of {len(names)} at zero (L1), not shown" if zero else ""
    legend = "blue: embedding, orange: QCT marker" if set(names) & set(QCT_COLUMNS) else "embedding features"
    fig.suptitle(f"{title}: {len(names)} features{note}\n{legend}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(y, curves: dict, classes, path) -> None:
    """Out-of-fold ROC curves. Binary: one curve per variant (``curves``: name -> proba (n, 2)).
    More classes: one-vs-rest curves of the first variant in ``curves``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    y = np.asarray(y)
    fig, ax = plt.subplots(figsize=(5.0, 4.6))
    if len(classes) == 2:
        for i, (name, proba) in enumerate(curves.items()):
            fpr, tpr, _ = roc_curve(y, proba[:, 1])
            ax.plot(fpr, tpr, color=COLOURS[i % len(COLOURS)], lw=2 if i == 0 else 1.2,
                    label=f"{name} (AUC {roc_auc_score(y, proba[:, 1]):.3f})")
        title = f"out-of-fold ROC, positive class {classes[1]}"
    else:
        name, proba = next(iter(curves.items()))
        for k, cls in enumerate(classes):
            fpr, tpr, _ = roc_curve(y == k, proba[:, k])
            ax.plot(fpr, tpr, color=COLOURS[k % len(COLOURS)],
                    label=f"{cls} vs rest (AUC {roc_auc_score(y == k, proba[:, k]):.3f})")
        title = f"out-of-fold one-vs-rest ROC: {name}"
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="lower right")
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
