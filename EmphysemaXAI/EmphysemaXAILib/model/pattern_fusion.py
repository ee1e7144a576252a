"""Fusion of texture and calibrated density into one per-voxel emphysema map (issue 25, item 4).

A pattern model's ``config.json`` may hold a ``fusion`` block; :class:`~.pattern_infer.PatternPredictor`
then replaces the (calibrated) fraction map by the **fused map**, and the case's extent is the lung
mean of the fused map (the map's extent rule ranks voxels by it too: map and extent tell one story).
Models without the block are unchanged.

Per voxel of the model's working grid (1 mm pixels, one axial image at a time) the features
(:data:`ALL_FEATURES`; a block uses some of them, :data:`FEATURES` by default):

- ``texture_logit``: logit of 1 - p(normal) of the pattern trunk's dense map (texture evidence);
- ``laa950_local``: logit of the share of lung pixels below -950 HU in a ``window_mm`` square
  about the voxel (same axial image, lung pixels only; clipped to 0.1 %..99.9 %);
- ``fraction_logit``: logit of the fraction trunk's map (before the linear phantom calibration);
- ``mean_hu_local``: (mean HU of the window's lung pixels + 900) / 100;
- ``laa950_voxel``: 1 where the voxel itself reads below -950 HU; ``laa950_voxel_x_texture``: its
  product with ``texture_logit``;
- ``laa950_smooth_local``: as ``laa950_local``, but the threshold is applied to the HU smoothed
  within the lung (normalised Gaussian convolution of SD :data:`SMOOTH_MM`, same axial image):
  image noise that pushes single normal voxels below -950 HU is averaged out, lesions of a few
  millimetres stay below it.

The HU are those the model sees (on a case: calibrated, air / blood from quality control).
``fused = sigmoid(coefficients . features + intercept)``: the probability that the voxel is an
emphysema voxel, i.e. a low-attenuation voxel in emphysematous lung. It is fitted by
:func:`.pattern_fusion_fit.fit_fusion` (scikit-learn's LogisticRegression on standardised
features, then written back in the features' own units) on voxels of two kinds of training items
(:func:`.pattern_fusion_fit.training_voxels`):

- mosaics of 4 x 4 CIP patches (the model's training patches only: a ``holdout_fold`` stays
  out), target 1 where the patch is emphysema (any of the five classes) and the pixel reads below
  -950 HU as stored, 0 elsewhere (every pixel of a normal patch is 0);
- phantom slices (:func:`~.phantom_cohort.phantom_design`, the training phantoms), target =
  the phantom's true lesion mask (noise-free lesions are exactly the lung voxels below -950 HU).

Each item is read with a residual air error (uniform in +-``residual_air_hu``, water fixed) so
that the fit does not trust the -950 HU threshold more than a calibration deserves. Then
:func:`.pattern_fusion_fit.calibrate_block` rescales the block's logit on the fit phantoms,
whole, so that the lung
mean of the map is their true extent. Why texture and the *smoothed* local density by default
(:data:`FEATURES`; the shipped model's block since issue 25): on the held-out CIP fold the
fraction trunk's logit lowered the fused extent's ranking, and against the raw local %LAA-950 the
smoothed one reads the 36 held-out phantoms of ``evaluate`` with extent MAE 1.85 instead of 2.72
points (the noise of low-dose scans no longer counts as emphysema) while ranking the held-out
CIP patches alike (MODEL_CARD.md, "Fused extent").
"""
from __future__ import annotations

import numpy as np

from ..analysis.severity import EMPHYSEMA_HU

ALL_FEATURES = ("fraction_logit", "texture_logit", "laa950_local", "mean_hu_local", "laa950_voxel",
                "laa950_voxel_x_texture", "laa950_smooth_local")
FEATURES = ("texture_logit", "laa950_smooth_local")
WINDOW_MM = 15.0
SMOOTH_MM = 1.0    # laa950_smooth_local: Gaussian SD of the in-lung smoothing before the -950 HU threshold
LAA_HU = EMPHYSEMA_HU
EPS = 1e-3
LAA_EPS = 1e-3     # a window without any voxel below -950 HU: logit(0.001), far below one voxel in 225


def _logit(p: np.ndarray, eps: float = EPS) -> np.ndarray:
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p / (1.0 - p)).astype(np.float32)


def local_density(hu: np.ndarray, lung: np.ndarray, window_px: int) -> tuple:
    """(share of lung pixels < -950 HU, mean HU of lung pixels), each shaped like ``hu``
    (..., H, W), in a ``window_px`` square about each pixel of its own axial image; where a
    window holds no lung: share 0, mean -900 HU."""
    from scipy.ndimage import uniform_filter

    size = (1,) * (hu.ndim - 2) + (window_px, window_px)
    lung = lung.astype(np.float32)
    n = uniform_filter(lung, size, mode="constant")
    low = uniform_filter((hu < LAA_HU).astype(np.float32) * lung, size, mode="constant")
    total = uniform_filter(np.asarray(hu, np.float32) * lung, size, mode="constant")
    ok = n > 1e-6
    share = np.where(ok, low / np.where(ok, n, 1.0), 0.0).astype(np.float32)
    mean = np.where(ok, total / np.where(ok, n, 1.0), -900.0).astype(np.float32)
    return share, mean


def smoothed_in_lung(hu: np.ndarray, lung: np.ndarray, sigma_px: float) -> np.ndarray:
    """HU (..., H, W) smoothed by a Gaussian of SD ``sigma_px`` pixels within each axial image,
    counting lung pixels only (normalised convolution: non-lung never bleeds in); non-lung pixels
    keep their HU."""
    from scipy.ndimage import gaussian_filter

    sigma = (0,) * (hu.ndim - 2) + (sigma_px, sigma_px)
    weight = lung.astype(np.float32)
    total = gaussian_filter(np.asarray(hu, np.float32) * weight, sigma, mode="constant")
    norm = gaussian_filter(weight, sigma, mode="constant")
    return np.where(lung, total / np.maximum(norm, 1e-6), hu).astype(np.float32)


def features(hu: np.ndarray, lung: np.ndarray, fraction_raw: np.ndarray, p_normal: np.ndarray,
             pixel_mm: float, window_mm: float = WINDOW_MM, names=FEATURES) -> np.ndarray:
    """(len(names), ...) float32 features (:data:`ALL_FEATURES`) of every pixel of (..., H, W)
    arrays: ``hu`` (HU the model saw), bool ``lung``, the fraction map before calibration and p(normal)."""
    window_px = max(1, int(round(window_mm / pixel_mm)) // 2 * 2 + 1)
    cache = {}

    def get(name):
        if name not in cache:
            if name in ("laa950_local", "mean_hu_local"):
                share, mean = local_density(hu, lung, window_px)
                cache["laa950_local"] = _logit(share, LAA_EPS)
                cache["mean_hu_local"] = ((mean + 900.0) / 100.0).astype(np.float32)
            elif name == "fraction_logit":
                cache[name] = _logit(fraction_raw)
            elif name == "texture_logit":
                cache[name] = _logit(1.0 - p_normal)
            elif name == "laa950_voxel":
                cache[name] = (np.asarray(hu) < LAA_HU).astype(np.float32)
            elif name == "laa950_smooth_local":
                smooth = smoothed_in_lung(hu, lung, SMOOTH_MM / pixel_mm)
                cache[name] = _logit(local_density(smooth, lung, window_px)[0], LAA_EPS)
            elif name == "laa950_voxel_x_texture":
                cache[name] = get("laa950_voxel") * get("texture_logit")
            else:
                raise ValueError(f"unknown fusion feature {name!r}")
        return cache[name]

    return np.stack([get(n) for n in names])


def fused_logit(feats: np.ndarray, block: dict) -> np.ndarray:
    """The fused map's logit (...) from features (``block["features"]`` order) and a ``fusion`` block."""
    w = np.asarray(block["coefficients"], np.float32).reshape((-1,) + (1,) * (feats.ndim - 1))
    return ((feats * w).sum(axis=0) + np.float32(block["intercept"])).astype(np.float32)


def fused_map(feats: np.ndarray, block: dict) -> np.ndarray:
    """The fused emphysema map (...) in [0, 1] from features (``block["features"]`` order) and a
    ``fusion`` block."""
    return (1.0 / (1.0 + np.exp(-fused_logit(feats, block)))).astype(np.float32)
