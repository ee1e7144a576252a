"""Two classical baselines for the six parenchyma patterns of 2D patches (issue: pattern baselines).

Both take ``images`` (n, 31, 31) float32 HU (any (n, h, w) works: only the HU values count, not
where they are) and ``labels`` (n,) int index into :data:`~..analysis.patterns.PATTERNS`, and return a
model whose ``predict_proba(images)`` is (n, 6) (columns in PATTERNS order, rows sum to 1; a class
absent from the training labels gets probability 0).

:func:`fit_local_histogram` -- the Chest Imaging Platform's local-histogram classifier (Castaldi et
al. 2013, Acad Radiol 20:1; CIP ``cip_python/classification/local_histogram_emphysema.py``),
retrained on whatever training patches it is given. What CIP does, per 31 x 31 window:

* a kernel density estimate of the window's 961 HU values on a mesh of 4,096 points over
  [-1050, 3050] HU (~1 HU apart), its bandwidth chosen per window by Botev et al.'s diffusion
  method (Ann Stat 2010), computed by smoothing the 4,096-bin histogram in the DCT domain;
* feature = the density on the first 600 mesh points (-1050 .. ~-450 HU) normalised to sum 1;
  "tail" = the fraction of the density above that;
* a 5-nearest-neighbour classifier, L1 distance, distance-weighted votes, trained on five classes
  (all but paraseptal), then a hierarchical rule: a window the kNN does not call normal and whose
  tail exceeds 0.2843 is paraseptal (the constant CIP fitted on all of EmphysemaPatches.mat).

What this module does: the same mesh, the same 600-point feature and tail, the same kNN
(scikit-learn ``KNeighborsClassifier(5, metric="manhattan", weights="distance")``) and the same
hierarchical rule; our own code throughout. Differences: the density is the 4,096-bin histogram
smoothed by a Gaussian of the Botev bandwidth with reflecting ends (the same estimate as CIP's DCT
smoothing, computed with ``scipy.ndimage.gaussian_filter1d``); Botev's fixed point runs its
recursion from l - 1 = 6 down to 2 as the paper does (CIP's loop starts at 7), in float64; when
the fixed point has no root in (0, 0.1] the bandwidth falls back to Silverman's rule (CIP fails);
the paraseptal threshold is refitted on the training patches (the tail value that best separates
paraseptal from the other non-normal training patches) instead of CIP's constant, so that no test
patch informs it. ``hierarchical=False`` gives a plain 6-class kNN on the same features.

:func:`fit_histogram_lr` -- HU-histogram features + multinomial logistic regression: the fraction
of a patch's pixels in 10 HU bins over [-1050, -500) HU, plus one bin for < -1050 and one for
>= -500 HU (57 features summing to 1), StandardScaler + LogisticRegression (lbfgs, which is
multinomial for several classes in scikit-learn >= 1.5; ``max_iter`` 5000).

:func:`evaluate_folds` scores a ``fit_fn`` on the folds of :func:`.cip_patches.patch_folds`;
:func:`scanner_shift` is the simulated change of scanner used as a robustness test.
"""
from __future__ import annotations

import numpy as np

from ..analysis.patterns import PATTERN_GROUPS, PATTERNS, THREE_WAY, group_probabilities

N_CLASSES = len(PATTERNS)
PARASEPTAL = PATTERNS.index("paraseptal")
NORMAL = PATTERNS.index("normal")

#: CIP's KDE mesh: 4,096 points over [KDE_LOW, KDE_HIGH] HU; the feature is its first KDE_KEEP points
KDE_LOW, KDE_HIGH, KDE_POINTS, KDE_KEEP = -1050.0, 3050.0, 4096, 600
#: HU-histogram LR: bin edges (HU) of the in-range bins; below the first and from the last edge up are one bin each
LR_EDGES = np.arange(-1050.0, -500.0 + 1e-6, 10.0)


# ---------------------------------------------------------------- shared
def _probabilities_6(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(n, len(classes)) probabilities of a scikit-learn model -> (n, 6) in PATTERNS order."""
    out = np.zeros((proba.shape[0], N_CLASSES))
    out[:, np.asarray(classes, int)] = proba
    return out


def _flat(images) -> np.ndarray:
    """(n, h, w) HU -> (n, h * w) float64."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, h, w) HU, got shape {images.shape}")
    return images.reshape(len(images), -1)


# ---------------------------------------------------------------- CIP's local histogram
def botev_bandwidth(counts: np.ndarray, n_samples: int) -> float | None:
    """Botev et al.'s (2010) diffusion bandwidth of a 1D sample from its histogram ``counts``
    (equal bins on a range rescaled to [0, 1]) -> the bandwidth as a fraction of the range, or
    None when the fixed-point equation has no root in (0, 0.1]."""
    from scipy.fft import dct
    from scipy.optimize import brentq

    a = dct(counts / n_samples, type=2)  # unnormalised DCT-II: 2 * sum x_j cos(pi k (2j + 1) / 2N)
    k2 = np.arange(1, len(counts), dtype=np.float64) ** 2
    a2 = (a[1:] / 2.0) ** 2

    def functional(s: int, t: float) -> float:  # 2 pi^(2s) sum k^(2s) a_k^2 exp(-k^2 pi^2 t)
        return 2.0 * np.pi ** (2 * s) * np.sum(k2 ** s * a2 * np.exp(-k2 * np.pi ** 2 * t))

    def fixed_point(t: float) -> float:
        order = 7
        f = functional(order, t)
        for s in range(order - 1, 1, -1):
            k0 = np.prod(np.arange(1, 2 * s, 2, dtype=np.float64)) / np.sqrt(2 * np.pi)
            const = (1 + 0.5 ** (s + 0.5)) / 3
            time = (2 * const * k0 / n_samples / f) ** (2.0 / (3 + 2 * s))
            f = functional(s, time)
        return t - (2 * n_samples * np.sqrt(np.pi) * f) ** (-0.4)

    try:
        t_star = brentq(fixed_point, 1e-12, 0.1)
    except (ValueError, FloatingPointError, ZeroDivisionError):
        return None
    return float(np.sqrt(t_star))


def local_histogram_features(images) -> tuple:
    """CIP's local-histogram features of each patch: ``images`` (n, h, w) HU ->
    (features (n, 600): the KDE on the mesh points -1050 .. ~-450 HU, each row normalised to sum 1;
    tail (n,): fraction of the density above that; bandwidth (n,) HU; fallback (n,) bool: Botev's
    fixed point failed and Silverman's rule gave the bandwidth)."""
    from scipy.ndimage import gaussian_filter1d

    flat = _flat(images)
    step = (KDE_HIGH - KDE_LOW) / KDE_POINTS  # bin width, HU (~1.001)
    features = np.empty((len(flat), KDE_KEEP))
    tail, bandwidth = np.empty(len(flat)), np.empty(len(flat))
    fallback = np.zeros(len(flat), bool)
    for i, values in enumerate(flat):
        counts, _ = np.histogram(values, bins=KDE_POINTS, range=(KDE_LOW, KDE_HIGH))
        fraction = botev_bandwidth(counts.astype(np.float64), len(values))
        if fraction is None or not np.isfinite(fraction) or fraction <= 0:
            fallback[i] = True
            spread = min(values.std(), (np.percentile(values, 75) - np.percentile(values, 25)) / 1.34)
            hu = 0.9 * max(spread, step) * len(values) ** -0.2
        else:
            hu = fraction * (KDE_HIGH - KDE_LOW)
        bandwidth[i] = hu
        density = gaussian_filter1d(counts.astype(np.float64), hu / step, mode="reflect", truncate=5.0)
        total = density.sum()
        kept = density[:KDE_KEEP]
        features[i] = kept / max(kept.sum(), 1e-12)
        tail[i] = density[KDE_KEEP:].sum() / max(total, 1e-12)
    return features, tail, bandwidth, fallback


def _fit_tail_threshold(tail: np.ndarray, labels: np.ndarray) -> float | None:
    """The tail fraction that best separates paraseptal from the other non-normal patches
    (accuracy of "paraseptal iff tail > threshold"); None without both kinds."""
    keep = labels != NORMAL
    tail, is_ps = tail[keep], labels[keep] == PARASEPTAL
    if is_ps.all() or not is_ps.any():
        return None
    candidates = np.unique(tail)
    cuts = np.concatenate([[candidates[0] - 1e-9], (candidates[1:] + candidates[:-1]) / 2])
    correct = [np.sum((tail > c) == is_ps) for c in cuts]
    return float(cuts[int(np.argmax(correct))])


class LocalHistogramModel:
    """CIP's local-histogram kNN (see the module docstring). ``predict_proba(images)``: (n, 6)."""

    def __init__(self, knn, threshold: float | None, hierarchical: bool):
        self.knn, self.threshold, self.hierarchical = knn, threshold, hierarchical

    def predict_proba(self, images) -> np.ndarray:
        features, tail, _, _ = local_histogram_features(images)
        proba = _probabilities_6(self.knn.predict_proba(features), self.knn.classes_)
        if self.hierarchical and self.threshold is not None:
            paraseptal = (proba.argmax(axis=1) != NORMAL) & (tail > self.threshold)
            proba[paraseptal] = 0.0
            proba[paraseptal, PARASEPTAL] = 1.0
        return proba

    def predict(self, images) -> np.ndarray:
        return self.predict_proba(images).argmax(axis=1)


def fit_local_histogram(images, labels, *, hierarchical: bool = True, k: int = 5) -> LocalHistogramModel:
    """Fit CIP's local-histogram classifier on ``images`` (n, h, w) HU with ``labels`` (n,)
    PATTERNS indices. ``hierarchical`` (CIP's scheme): kNN on the non-paraseptal patches, then
    paraseptal by the density tail above ~-450 HU with the threshold fitted on these patches;
    False: one 6-class kNN. ``k`` neighbours (CIP: 5), L1 distance, distance-weighted."""
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels, dtype=np.int64)
    features, tail, _, _ = local_histogram_features(images)
    threshold = _fit_tail_threshold(tail, labels) if hierarchical else None
    train = labels != PARASEPTAL if threshold is not None else np.ones(len(labels), bool)
    knn = KNeighborsClassifier(n_neighbors=min(k, int(train.sum())), metric="manhattan", weights="distance")
    knn.fit(features[train], labels[train])
    return LocalHistogramModel(knn, threshold, hierarchical)


# ---------------------------------------------------------------- HU histogram + logistic regression
def hu_histogram_features(images) -> np.ndarray:
    """``images`` (n, h, w) HU -> (n, 57): fraction of each patch's pixels below -1050 HU, in the
    55 bins of 10 HU over [-1050, -500) HU, and at or above -500 HU (rows sum to 1)."""
    flat = _flat(images)
    index = np.searchsorted(LR_EDGES, flat, side="right")  # 0: < -1050; len(edges): >= -500
    n_bins = len(LR_EDGES) + 1
    counts = np.stack([np.bincount(row, minlength=n_bins) for row in index])
    return counts / flat.shape[1]


class HistogramLRModel:
    """StandardScaler + multinomial LogisticRegression on :func:`hu_histogram_features`."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def predict_proba(self, images) -> np.ndarray:
        return _probabilities_6(self.pipeline.predict_proba(hu_histogram_features(images)),
                                self.pipeline.classes_)

    def predict(self, images) -> np.ndarray:
        return self.predict_proba(images).argmax(axis=1)


def fit_histogram_lr(images, labels, *, C: float = 1.0, max_iter: int = 5000) -> HistogramLRModel:
    """Fit the HU-histogram logistic regression on ``images`` (n, h, w) HU with ``labels`` (n,)
    PATTERNS indices (L2 penalty of strength 1 / ``C`` on standardised features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    pipeline.fit(hu_histogram_features(images), np.asarray(labels, dtype=np.int64))
    return HistogramLRModel(pipeline)


# ---------------------------------------------------------------- evaluation
def scanner_shift(images, offset_hu: float = 60.0, noise_sd_hu: float = 40.0, seed: int = 0) -> np.ndarray:
    """A simulated change of scanner: ``images`` (n, h, w) HU + ``offset_hu`` + white Gaussian
    noise of SD ``noise_sd_hu`` HU (numpy generator seeded with ``seed``), rounded to whole HU
    -> (n, h, w) float32 HU."""
    rng = np.random.default_rng(seed)
    images = np.asarray(images, dtype=np.float32)
    return np.rint(images + offset_hu + rng.normal(0.0, noise_sd_hu, images.shape)).astype(np.float32)


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """(n, 6) probabilities and (n,) true PATTERNS indices -> accuracy (6 classes), balanced
    accuracy (mean recall of the classes present), three_way (accuracy on the normal,
    centrilobular and paraseptal patches only: argmax of the grouped probabilities among those
    three broad patterns), fractions in [0, 1]."""
    from sklearn.metrics import balanced_accuracy_score

    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    group_names = list(PATTERN_GROUPS)
    columns = [group_names.index(g) for g in THREE_WAY]
    truth_group = np.full(len(labels), -1)
    for j, name in enumerate(THREE_WAY):
        truth_group[np.isin(labels, PATTERN_GROUPS[name])] = j
    keep = truth_group >= 0
    grouped = group_probabilities(probabilities)[keep][:, columns]
    return {"accuracy": float(np.mean(predicted == labels)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
            "three_way": float(np.mean(grouped.argmax(axis=1) == truth_group[keep])) if keep.any() else float("nan")}


def evaluate_folds(fit_fn, patches, folds, *, shift=None) -> dict:
    """Fit ``fit_fn(images, labels)`` on each fold's training patches and score its
    ``predict_proba`` on the test patches. ``patches``: a :class:`.cip_patches.PatchSet` (or
    anything with ``images`` (n, h, w) HU and ``labels`` (n,)); ``folds``: (train indices, test
    indices) pairs. ``shift``: optional ``f(images, fold_index) -> images`` applied to the test
    images for a second score of the same fitted models.

    Returns {"accuracy", "balanced_accuracy", "three_way": mean over folds, "per_fold": list of
    the per-fold dicts of :func:`score`, "seconds": total, and, with ``shift``, "shifted": the same
    (means and per_fold) on the shifted test images}; figures are fractions in [0, 1]."""
    import time

    start = time.perf_counter()
    per_fold, shifted = [], []
    for f, (train, test) in enumerate(folds):
        model = fit_fn(patches.images[train], patches.labels[train])
        per_fold.append(score(model.predict_proba(patches.images[test]), patches.labels[test]))
        if shift is not None:
            moved = shift(patches.images[test], f)
            shifted.append(score(model.predict_proba(moved), patches.labels[test]))

    def summary(rows):
        out = {key: float(np.mean([r[key] for r in rows])) for key in ("accuracy", "balanced_accuracy", "three_way")}
        out["per_fold"] = rows
        return out

    result = summary(per_fold)
    if shift is not None:
        result["shifted"] = summary(shifted)
    result["seconds"] = time.perf_counter() - start
    return result
