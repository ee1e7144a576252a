"""A case's emphysema extent as both models report it: the result type, the class and class
probabilities of an extent, and the fit of the extent calibration and SD on validation cases.

Class and probabilities follow the one definition of ``docs/severity.md``: the class is the band of
the predicted extent; the probability of each class is the mass of a normal distribution centred
on the predicted extent, with the SD of the model's validation error (``config["extent_sigma"]``,
:func:`extent_sigma`), falling in that class's band. Fractions pass through the linear
calibration fitted on validation cases (``config["extent_calibration"]`` = slope, intercept in
points, :func:`fit_calibration`) before they are averaged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..analysis.severity import SEVERITY_CLASSES, SEVERITY_CUTPOINTS, severity_class


def class_probabilities(extent_pct: float, sigma: float, cutpoints=SEVERITY_CUTPOINTS) -> dict:
    """Probability of each severity class for an extent estimate with normal error ``sigma``."""
    from scipy.stats import norm

    bounds = [-np.inf] + [b for b, _ in cutpoints] + [np.inf]
    cdf = norm.cdf(np.asarray(bounds), loc=extent_pct, scale=max(sigma, 1e-3))
    return {name: float(cdf[i + 1] - cdf[i]) for i, name in enumerate(SEVERITY_CLASSES)}


def model_extent_sigma(config: dict, fusion: dict | None = None) -> float:
    """The SD (points) of a model's validation extent error: that of its ``fusion`` block
    (``fusion``, default the config's own) when the block carries one (it then gives the extent),
    else ``config["extent_sigma"]`` (1.0 when absent)."""
    block = fusion if fusion is not None else config.get("fusion")
    return float((block or {}).get("extent_sigma", config.get("extent_sigma", 1.0)))


def extent_summary(extent: float, regions, fractions: np.ndarray, config: dict, cutpoints=SEVERITY_CUTPOINTS) -> dict:
    """``class``, ``probabilities``, ``extent_pct`` and ``extent_by_region`` (% of each region of
    ``regions``, from the gathered per-voxel ``fractions``) of a case extent (% of lung), with
    the model's validation error ``config["extent_sigma"]``."""
    sigma = float(config.get("extent_sigma", 1.0))
    return {"class": severity_class(extent, cutpoints), "probabilities": class_probabilities(extent, sigma, cutpoints),
            "extent_pct": extent,
            "extent_by_region": {name: (float(100.0 * fractions[mask].mean()) if mask.any() else None)
                                 for name, mask in regions.masks.items()}}


@dataclass
class SeverityResult:
    """What the model says about one case, and what the explanations need.

    ``fraction_map`` is (z, y, x) float32 on the working grid (``grid``): each lung voxel holds its
    tile's predicted emphysema fraction.
    """

    summary: dict
    grid: object
    tiles: object
    fractions: np.ndarray          # (n,) predicted per tile
    patch_weights: np.ndarray      # (n,) attention pooling weights (sum 1)
    fraction_map: np.ndarray
    timings_s: dict = field(default_factory=dict)
    tile_priority: np.ndarray | None = None     # (n,) order of the tiles for expensive explanations
    pattern_labels: np.ndarray | None = None    # (z, y, x) uint8 pattern codes on the CT grid (pattern model)


def fit_calibration(rows: list) -> tuple:
    """(slope, intercept) of true against predicted case extent (least squares over ``rows``
    with a known extent): the linear map applied to tile fractions at inference."""
    pairs = np.array([(r["extent_raw"], r["extent_true"]) for r in rows if r.get("extent_true") is not None])
    if len(pairs) < 3:
        return 1.0, 0.0
    slope, intercept = np.polyfit(pairs[:, 0], pairs[:, 1], 1)
    return float(slope), float(intercept)


def extent_sigma(rows: list) -> float:
    """The SD of the extent error (RMS of predicted - true over ``rows`` with a known extent,
    at least 0.25 points; 2.0 without any)."""
    errors = [r["extent_pct"] - r["extent_true"] for r in rows if r.get("extent_true") is not None]
    return float(max(np.sqrt(np.mean(np.square(errors))), 0.25)) if errors else 2.0
