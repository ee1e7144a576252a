"""Fitting a pattern model's ``fusion`` block (``emphysema-xai fit-fusion``): the voxels it is
fitted on, the logistic fit, and the logit calibration on phantoms. What the block means and how a
case uses it: :mod:`.pattern_fusion` (kept free of these imports: the predictor imports it)."""
from __future__ import annotations

import numpy as np

from .pattern_fusion import ALL_FEATURES, FEATURES, LAA_HU, WINDOW_MM, features, fused_logit

FIT_PHANTOM_SEED = 5     # phantom_design(n, 5): phantoms no trunk was trained on (training: 0, bench: 2)


def _mosaics(images: np.ndarray, labels: np.ndarray, n: int, rng) -> tuple:
    """(n, 124, 124) HU mosaics of 4 x 4 patches (k of 16 emphysema, k uniform in 0..16) and
    (n, 124, 124) bool emphysema-tile masks."""
    emphysema, normal = np.flatnonzero(labels > 0), np.flatnonzero(labels == 0)
    out, tiles = [], []
    for _ in range(n):
        k = int(rng.integers(17))
        pick = rng.permutation(np.concatenate([rng.choice(emphysema, k), rng.choice(normal, 16 - k)]))
        out.append(images[pick].reshape(4, 4, 31, 31).transpose(0, 2, 1, 3).reshape(124, 124))
        flag = np.repeat(np.repeat((labels[pick] > 0).reshape(4, 4), 31, 0), 31, 1)
        tiles.append(flag)
    return np.stack(out).astype(np.float32), np.stack(tiles)


def cip_voxels(predictor, images: np.ndarray, labels: np.ndarray, pixel_mm: float, mosaics: int,
               per_item: int, residual_air_hu: float, seed: int, window_mm: float = WINDOW_MM) -> tuple:
    """(features (m, len(ALL_FEATURES)), targets (m,)) from ``mosaics`` mosaics of the given CIP patches."""
    import torch

    from .pattern_augment import center_resample
    from .pattern_runs import air_offset

    rng = np.random.default_rng([seed, 25, 1])
    hu, emph = _mosaics(images, labels, mosaics, rng)
    size = int(round(hu.shape[-1] * pixel_mm / predictor.pixel_mm / 4)) * 4
    x_clean = center_resample(torch.from_numpy(hu)[:, None], pixel_mm, predictor.pixel_mm, size)[:, 0].numpy()
    idx = np.minimum((np.arange(size) + 0.5) * hu.shape[-1] / size, hu.shape[-1] - 1).astype(int)
    emph = emph[:, idx][:, :, idx]
    target = emph & (x_clean < LAA_HU)
    shift = rng.uniform(-residual_air_hu, residual_air_hu, len(hu))
    x = np.stack([air_offset(image, o) for image, o in zip(x_clean, shift)])
    maps = predictor.dense_images(x)
    lung = np.ones(x.shape, bool)
    feats = features(x, lung, maps["fraction"], maps["p_normal"], predictor.pixel_mm, window_mm, ALL_FEATURES)
    rows, ys = [], []
    for i in range(len(x)):
        pick = rng.choice(size * size, min(per_item, size * size), replace=False)
        rows.append(feats[:, i].reshape(len(ALL_FEATURES), -1)[:, pick].T)
        ys.append(target[i].ravel()[pick])
    return np.concatenate(rows), np.concatenate(ys).astype(np.float32)


def phantom_voxels(predictor, design: list, every: int, per_item: int, residual_air_hu: float, seed: int,
                   window_mm: float = WINDOW_MM) -> tuple:
    """(features (m, len(ALL_FEATURES)), targets (m,)) from every ``every``-th lung slice of the phantoms of
    ``design`` on the model's working grid (true lung masks, target = true lesion mask)."""
    from ..phantom import generate_phantom
    from .pattern_runs import air_offset
    from .tiles import to_working_grid

    rng = np.random.default_rng([seed, 25, 2])
    rows, ys = [], []
    for params in design:
        phantom = generate_phantom(params)
        grid = to_working_grid(phantom.ct, phantom.labels["lungs"],
                               extra={"lesion": (phantom.labels["emphysema"] > 0).astype(np.uint8)},
                               spacing=predictor.working_spacing)
        lung = grid.labels > 0
        zs = np.flatnonzero(lung.any(axis=(1, 2)))[::every]
        hu = air_offset(grid.hu[zs], rng.uniform(-residual_air_hu, residual_air_hu))
        maps = predictor.dense_volume(hu, lung[zs])
        feats = features(hu, lung[zs], maps["fraction"], maps["p_normal"], predictor.pixel_mm, window_mm,
                         ALL_FEATURES)
        inside = np.flatnonzero(lung[zs].ravel())
        pick = rng.choice(inside, min(per_item, inside.size), replace=False)
        rows.append(feats.reshape(len(ALL_FEATURES), -1)[:, pick].T)
        ys.append((grid.extra["lesion"][zs] > 0).ravel()[pick])
    return np.concatenate(rows), np.concatenate(ys).astype(np.float32)


def training_voxels(predictor, cip, train_index: np.ndarray, design: list, *, mosaics: int = 240,
                    per_mosaic: int = 500, every: int = 6, per_phantom: int = 15000, residual_air_hu: float = 20.0,
                    window_mm: float = WINDOW_MM, seed: int = 0) -> dict:
    """The fit's voxels (module docstring): ``x`` (m, len(ALL_FEATURES)) float32, ``y`` (m,) 0/1,
    ``source`` (m,) 0 = CIP mosaic, 1 = phantom, and what they came from (``record``). CIP patches
    ``cip.images[train_index]`` without a chest-wall band; phantoms of ``design``."""
    from .cip_patches import chest_wall_mask

    images, labels = cip.images[train_index], cip.labels[train_index]
    clear = ~chest_wall_mask(images).any(axis=(1, 2))
    parts = [cip_voxels(predictor, images[clear], labels[clear], cip.pixel_mm, mosaics, per_mosaic,
                        residual_air_hu, seed, window_mm)]
    if design:
        parts.append(phantom_voxels(predictor, design, every, per_phantom, residual_air_hu, seed, window_mm))
    record = {"seed": seed, "cip_mosaics": mosaics, "cip_patches": int(clear.sum()),
              "phantoms": [int(p.seed) for p in design], "phantom_slice_every": every,
              "residual_air_hu": residual_air_hu, "window_mm": window_mm}
    return {"x": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts]),
            "source": np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)]), "record": record}


def fit_fusion(voxels: dict, names=FEATURES, C: float = 1.0) -> dict:
    """The ``fusion`` block (JSON-ready) fitted on :func:`training_voxels` with the features
    ``names``: LogisticRegression on standardised features, CIP and phantom voxels carrying equal
    total weight; the coefficients are given back in the features' own units (and per SD)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    columns = [ALL_FEATURES.index(n) for n in names]
    x, y, source = voxels["x"][:, columns].astype(np.float64), voxels["y"], voxels["source"]
    kinds = np.unique(source)
    weight = np.zeros(len(y))
    for k in kinds:
        weight[source == k] = len(y) / len(kinds) / np.sum(source == k)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=C, max_iter=2000).fit((x - mean) / scale, y, sample_weight=weight)
    per_sd = model.coef_[0]
    intercept = float(model.intercept_[0] - np.sum(per_sd * mean / scale))
    record = dict(voxels["record"])
    return {"features": list(names), "window_mm": record.pop("window_mm"),
            "coefficients": [round(float(c), 6) for c in per_sd / scale], "intercept": round(intercept, 6),
            "coefficients_per_sd": [round(float(c), 4) for c in per_sd],
            "fit": {**record, "voxels": {"cip": int(np.sum(source == 0)), "phantom": int(np.sum(source == 1))},
                    "positive_share": {str(k): round(float(y[source == k].mean()), 4) for k in kinds},
                    "C": C, "sklearn": sklearn.__version__}}


# ------------------------------------------------------------------------- phantom extent calibration

def phantom_logits(predictor, block: dict, design: list, voxels: int = 200_000, seed: int = 0) -> list:
    """Per phantom of ``design`` (true lungs, the model's working grid, as a case is run): a dict
    with ``z`` (m,) float32, the fused logits of up to ``voxels`` lung voxels drawn at random, and
    ``extent_true`` (% of lung)."""
    from ..phantom import generate_phantom
    from .tiles import to_working_grid

    rng = np.random.default_rng([seed, 25, 3])
    rows = []
    for params in design:
        phantom = generate_phantom(params)
        grid = to_working_grid(phantom.ct, phantom.labels["lungs"], spacing=predictor.working_spacing)
        lung = grid.labels > 0
        maps = predictor.dense_volume(grid.hu, lung)
        feats = features(grid.hu, lung, maps["fraction"], maps["p_normal"], predictor.pixel_mm,
                         float(block["window_mm"]), block["features"])
        z = fused_logit(feats, block)[lung]
        if z.size > voxels:
            z = rng.choice(z, voxels, replace=False)
        rows.append({"name": f"phantom-{params.seed}", "dose": params.dose, "kernel": params.kernel,
                     "z": z, "extent_true": float(phantom.truth["extent_pct"])})
    return rows


def _extents(rows: list, scale: float, shift: float) -> np.ndarray:
    return np.array([100.0 * np.mean(1.0 / (1.0 + np.exp(-(scale * r["z"] + shift)))) for r in rows])


def calibrate_block(block: dict, rows: list) -> dict:
    """``block`` with its logit rescaled so that the lung mean of the fused map matches the
    phantoms' true extents: ``scale`` and ``shift`` (scale > 0) minimise the squared extent error
    over ``rows`` (:func:`phantom_logits`; Nelder-Mead from (1, 0)) and are folded into the
    coefficients and intercept (logit' = scale x logit + shift). The map stays a probability in
    [0, 1] voxel by voxel and the ranking of voxels and cases is unchanged. Adds ``extent_sigma``
    (RMS error after, at least 0.25 points: the class probabilities' SD) and a ``calibration`` record."""
    from scipy.optimize import minimize

    truth = np.array([r["extent_true"] for r in rows])

    def loss(p):
        return float(np.sum((_extents(rows, np.exp(p[0]), p[1]) - truth) ** 2))

    fit = minimize(loss, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 400})
    scale, shift = float(np.exp(fit.x[0])), float(fit.x[1])
    before, after = _extents(rows, 1.0, 0.0), _extents(rows, scale, shift)
    out = dict(block)
    out["coefficients"] = [round(float(c) * scale, 6) for c in block["coefficients"]]
    out["intercept"] = round(float(block["intercept"]) * scale + shift, 6)
    if "coefficients_per_sd" in block:
        out["coefficients_per_sd"] = [round(float(c) * scale, 4) for c in block["coefficients_per_sd"]]
    out["extent_sigma"] = round(float(max(np.sqrt(np.mean((after - truth) ** 2)), 0.25)), 4)
    out["calibration"] = {
        "scale": round(scale, 6), "shift": round(shift, 6),
        "phantoms": [{"name": r["name"], "dose": r["dose"], "kernel": r["kernel"], "extent_true": round(t, 3),
                      "before": round(float(b), 3), "after": round(float(a), 3)}
                     for r, t, b, a in zip(rows, truth, before, after)],
        "mae_before": round(float(np.mean(np.abs(before - truth))), 3),
        "mae_after": round(float(np.mean(np.abs(after - truth))), 3)}
    return out


def fit_model_fusion(model_path, mat_path, *, phantoms: int = 8, seed: int = 0, names=FEATURES,
                     window_mm: float = WINDOW_MM, write: bool = False, command: str | None = None,
                     calibrate: bool = True) -> dict:
    """Fit the ``fusion`` block of a pattern model folder (``fit-fusion``): CIP patches of
    ``mat_path`` the model was trained on (a ``holdout`` fold in its metrics.json stays out) and
    ``phantoms`` phantoms of ``phantom_design(n, seed=FIT_PHANTOM_SEED)``, which neither trunk saw
    (``train-patterns`` draws seed 0; the fraction trunk is close to exact on its own training
    phantoms, so a fit there would learn no correction of it). ``calibrate``: then the block's logit is
    rescaled on the same phantoms, whole, so that its lung mean is their true extent
    (:func:`calibrate_block`). ``write``: the block goes into the
    folder's config.json (the weights and their SHA-256 are untouched). Returns the block."""
    import json
    from pathlib import Path

    import torch

    from ..io.atomic import write_atomic
    from .checkpoint import CONFIG_FILE, model_dir
    from .cip_patches import load_cip_patches
    from .pattern_infer import PatternPredictor
    from .phantom_cohort import phantom_design

    torch.manual_seed(seed)
    folder = Path(model_dir(model_path))
    predictor = PatternPredictor(folder, device="cpu")
    cip = load_cip_patches(mat_path)
    metrics = folder / "metrics.json"
    holdout = json.loads(metrics.read_text()).get("holdout") if metrics.is_file() else None
    train = np.setdiff1d(np.arange(len(cip)), holdout["test_index"] if holdout else [])
    design = phantom_design(phantoms, seed=FIT_PHANTOM_SEED)
    block = fit_fusion(training_voxels(predictor, cip, train, design, window_mm=window_mm, seed=seed), names)
    if calibrate:
        # the same fit phantoms, whole lungs: the lung mean of the map is the phantoms' true extent
        block = calibrate_block(block, phantom_logits(predictor, block, design, seed=seed))
    block["fit"]["holdout_fold"] = holdout["fold"] if holdout else None
    block["fit"]["command"] = command
    if write:
        config = json.loads((folder / CONFIG_FILE).read_text())
        config["fusion"] = block
        write_atomic(folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"),
                     overwrite=True)
    return block
