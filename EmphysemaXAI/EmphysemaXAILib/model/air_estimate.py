"""The air value a scanner reads, estimated from the images ``patterns`` is given (issue 25).

The pattern model expects air at -1000 HU (water at 0); a scanner reading air at -920 costs it a
fifth of its 3-way accuracy. When ``--air-hu`` is not given, :func:`estimate_air` estimates air
from all images of a run together (they come from one scanner; ``--air-groups input`` makes one
estimate per input file or folder):

1. **outside air**: when an image is a whole slice (at least :data:`WHOLE_SLICE_MM` across) with
   enough air outside the body (:func:`..analysis.anatomy.coarse_anatomy`), the peak of that air
   (:func:`..analysis.air.air_mode`); whole slices without it are not calibrated;
2. **histogram**: else (patches and ROIs) a regression on the pooled pixels (:func:`set_features`: low quantiles,
   and the size of the dark regions below them, which tells emphysema's holes from noise), trained
   on simulated sets of CIP's expert patches (:func:`fit`: random class mixtures, normal-only and
   emphysema-only sets, air offsets, noise). Three boosted-tree models are stored
   (``shipped/air_estimate.json``): the offset's mean and its 10 % and 90 % quantiles. The
   estimate is applied only when that interval excludes 0 (the data say the scanner is off): a
   set of normal patches alone cannot tell "normal lung on a calibrated scanner" from "emphysema
   on a scanner reading air high", and darkening it would call normal lung emphysema.

An air offset ``o`` (HU) means air read at -1000 + o with water at 0
(:func:`.pattern_runs.air_offset`); calibrating multiplies HU by 1000 / (1000 - o). Pure numpy
at inference (the trees are evaluated from JSON); scikit-learn only to :func:`fit`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ESTIMATE_FILE = Path(__file__).resolve().parent / "shipped" / "air_estimate.json"
QUANTILES = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 25, 50)   # % of the pooled pixels
DARK_QUANTILES = (1, 5, 15)     # % : dark-region thresholds
REFERENCE_PIXEL_MM = 0.65       # dark-region sizes are counted in pixels of this size (CIP's)
WHOLE_SLICE_MM = 150.0          # an image at least this wide (mm) may hold air outside the body
MIN_OUTSIDE_AIR = 500           # outside-air pixels (coarse grid) enough to read air there
TREES = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8}


@dataclass
class AirEstimate:
    """``air_hu``: the air value the images are calibrated with (-1000 when no offset is applied);
    ``source``: ``outside air``, ``histogram`` (an offset found), ``histogram: none found`` (the
    interval holds 0: not applied), ``none: whole slices without outside air``, ``given`` or
    ``none``; ``offset_hu`` = air_hu + 1000;
    ``interval_hu``: the histogram model's 10-90 % interval of the offset (None otherwise);
    ``images``: how many images it was made from."""

    air_hu: float
    source: str
    offset_hu: float
    interval_hu: tuple | None = None
    images: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def set_features(images: list, pixel_mm: float = REFERENCE_PIXEL_MM) -> np.ndarray:
    """(13,) features of HU images (a list of (H, W), pooled): log(-q) of the pooled
    :data:`QUANTILES`, then for each threshold at the pooled :data:`DARK_QUANTILES` the log of
    1 + the mean size (pixels of :data:`REFERENCE_PIXEL_MM`) of the dark region holding a dark
    pixel. Scale-free in the sense that the thresholds move with the offset."""
    from scipy import ndimage

    images = [np.asarray(image, np.float32) for image in images]
    pooled = np.concatenate([image.ravel() for image in images])
    q = np.percentile(pooled, QUANTILES + DARK_QUANTILES)
    out = list(np.log(np.maximum(-q[:len(QUANTILES)], 1.0)))
    area = (pixel_mm / REFERENCE_PIXEL_MM) ** 2
    for threshold in q[len(QUANTILES):]:
        weighted, dark = 0.0, 0
        for image in images:
            labels, n = ndimage.label(image < threshold)
            if n:
                sizes = np.bincount(labels.ravel())[1:].astype(np.float64)
                weighted += float((sizes ** 2).sum())
                dark += int(sizes.sum())
        out.append(np.log1p(area * weighted / max(dark, 1)))
    return np.array(out)


def simulate(images: np.ndarray, labels: np.ndarray, index: np.ndarray, n: int, seed: int,
             prior: bool = True) -> tuple:
    """(features (n, 13), offsets (n,) HU) of simulated one-scanner sets of the patches ``index``
    of ``images`` (m, H, W) HU with ``labels`` (m,) (0 = normal): 3-199 patches each; 60 %
    random class mixtures (Dirichlet 0.5 over the six classes), 25 % normal-only, 15 %
    emphysema-only; half the scanners calibrated (offset ~ N(0, 10 HU)), half uniform in
    -100..+100 HU (all uniform without ``prior``); white noise of SD uniform in 0..25 HU."""
    from .pattern_runs import air_offset

    rng = np.random.default_rng(seed)
    pools = {"normal": index[labels[index] == 0], "emphysema": index[labels[index] > 0]}
    by_class = [index[labels[index] == c] for c in range(int(labels.max()) + 1)]
    features, offsets = [], []
    for _ in range(n):
        kind = rng.choice(["mix", "normal", "emphysema"], p=[0.6, 0.25, 0.15])
        size = int(rng.integers(3, 200))
        if kind == "mix":
            classes = rng.choice(len(by_class), size, p=rng.dirichlet(np.full(len(by_class), 0.5)))
            pick = np.array([rng.choice(by_class[c]) for c in classes])
        else:
            pick = rng.choice(pools[kind], size)
        offset = rng.normal(0.0, 10.0) if prior and rng.random() < 0.5 else rng.uniform(-100.0, 100.0)
        shifted = air_offset(images[pick], offset)
        shifted = shifted + rng.normal(0.0, rng.uniform(0.0, 25.0), shifted.shape).astype(np.float32)
        features.append(set_features(list(shifted)))
        offsets.append(offset)
    return np.array(features), np.array(offsets)


def fit(images: np.ndarray, labels: np.ndarray, index: np.ndarray, n_sets: int = 4000, seed: int = 0) -> dict:
    """The estimator (a JSON-able dict) trained on simulated sets (:func:`simulate`) of the
    patches ``index``: boosted trees (:data:`TREES`) for the offset's mean, 10 % and 90 %."""
    from sklearn.ensemble import GradientBoostingRegressor

    x, y = simulate(images, labels, np.asarray(index), n_sets, seed)
    models = {}
    for name, loss in {"mean": {"loss": "squared_error"}, "low": {"loss": "quantile", "alpha": 0.1},
                       "high": {"loss": "quantile", "alpha": 0.9}}.items():
        gbr = GradientBoostingRegressor(random_state=seed, **TREES, **loss).fit(x, y)
        models[name] = export_trees(gbr)
    return {"features": {"quantiles": list(QUANTILES), "dark_quantiles": list(DARK_QUANTILES)},
            "training": {"patches": int(len(index)), "sets": n_sets, "seed": seed, "trees": TREES},
            "models": models}


def export_trees(gbr) -> dict:
    """A fitted GradientBoostingRegressor as plain lists (see :func:`predict`)."""
    trees = []
    for tree in gbr.estimators_[:, 0]:
        t = tree.tree_
        trees.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "feature": t.feature.tolist(), "threshold": [round(float(v), 6) for v in t.threshold],
                      "value": [round(float(v), 4) for v in t.value[:, 0, 0]]})
    return {"init": float(np.ravel(gbr.init_.constant_)[0]), "rate": float(gbr.learning_rate), "trees": trees}


def predict(model: dict, features: np.ndarray) -> float:
    """A stored boosted-tree model (:func:`export_trees`) at one feature vector (13,)."""
    total = 0.0
    for tree in model["trees"]:
        node = 0
        while tree["left"][node] != -1:
            go_left = features[tree["feature"][node]] <= tree["threshold"][node]
            node = tree["left"][node] if go_left else tree["right"][node]
        total += tree["value"][node]
    return model["init"] + model["rate"] * total


def load(path: Path | None = None) -> dict:
    return json.loads(Path(path or ESTIMATE_FILE).read_text())


def outside_air(images: list, pixel_mm: float) -> float | None:
    """The peak HU of air outside the body over the whole slices among ``images`` (None when
    none is at least :data:`WHOLE_SLICE_MM` across or they hold too little outside air)."""
    from ..analysis.air import air_mode
    from ..analysis.anatomy import coarse_anatomy

    values = []
    for image in images:
        if max(image.shape) * pixel_mm < WHOLE_SLICE_MM:
            continue
        anatomy = coarse_anatomy(np.asarray(image, np.float32)[None], (pixel_mm, pixel_mm, 1.0))
        values.append(anatomy.hu[anatomy.outside_air])
    values = np.concatenate(values) if values else np.zeros(0)
    return air_mode(values) if values.size >= MIN_OUTSIDE_AIR else None


def estimate_air(images: list, pixel_mm: float, estimator: dict | None = None) -> AirEstimate:
    """The air value of one scanner from its HU images (a list of (H, W), square pixels of
    ``pixel_mm``): outside air when whole slices hold it, else the histogram models (module
    docstring)."""
    images = [np.asarray(image, np.float32) for image in images]
    air = outside_air(images, pixel_mm)
    if air is not None:
        return AirEstimate(air_hu=round(air, 1), source="outside air", offset_hu=round(air + 1000.0, 1),
                           images=len(images))
    if any(max(image.shape) * pixel_mm >= WHOLE_SLICE_MM for image in images):
        # body, table and outside air are not what the histogram models were trained on (lung
        # patches): on the CIP crop (two whole COPDGene slices, no outside air) they read +85 HU
        return AirEstimate(-1000.0, "none: whole slices without outside air", 0.0, images=len(images))
    return histogram_estimate(images, pixel_mm, estimator)


def histogram_estimate(images: list, pixel_mm: float, estimator: dict | None = None) -> AirEstimate:
    """The histogram models' estimate (module docstring) for HU images (a list of (H, W))."""
    estimator = estimator or load()
    features = set_features(images, pixel_mm)
    low, high, mean = (predict(estimator["models"][k], features) for k in ("low", "high", "mean"))
    interval = (round(low, 1), round(high, 1))
    if low <= 0.0 <= high:
        return AirEstimate(-1000.0, "histogram: none found", 0.0, interval, len(images))
    return AirEstimate(round(mean - 1000.0, 1), "histogram", round(mean, 1), interval, len(images))
