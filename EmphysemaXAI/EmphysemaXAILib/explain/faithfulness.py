"""Faithfulness and plausibility of attribution maps (``explain-eval``).

All on the model's working grid (z, y, x), within the lung:
- deletion: the lung voxels in attribution order (most positive first) are replaced by normal
  lung (NORMAL_LUNG_HU, not air) in steps; the model's case extent (:func:`model_extent`: for a
  fused pattern model, the fused extent its explanations explain) after each step, divided by
  the original, traces a curve whose area (fraction removed 0..1) is ``deletion_auc`` (lower =
  more faithful). The same with a random order (``deletion_auc_random``) and with the LAA order
  (lowest HU first: what a threshold would point at, ``deletion_auc_laa``).
- insertion: from an all-normal lung, original voxels come back in attribution order;
  ``insertion_auc`` (higher = more faithful).
- pointing game: the most attributed voxel lies in a lesion (lesion mask dilated by
  ``tolerance`` working voxels); ``dice_topk``: Dice of the k most attributed lung voxels with
  the lesion mask, k = the number of lesion voxels.
- model randomisation (Adebayo et al. 2018): maps of a copy with re-initialised weights;
  ``randomization_ssim`` is the SSIM map (scikit-image) averaged over the lung voxels where
  either map is non-zero (``randomization_ssim_lung``: over all lung voxels of the explained
  tiles, where the shared zero background of sparse maps pulls the figure towards 1), and
  ``randomization_spearman`` the rank correlation over lung voxels, both within the tiles the
  method explained (low = the map depends on what the model learned); the correlation is None
  when either map is constant there, and ``randomization_map_empty`` says when the randomised
  model's map is 0 everywhere (SSIM of a sparse map with an empty one stays high: the flat
  background dominates the average).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..analysis.severity import EMPHYSEMA_HU
from ..model.tiles import extract_tiles, paint_tiles
from .assemble import working_attribution
from .fused_target import tile_extents
from .methods import NORMAL_LUNG_HU

FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)


def model_extent(predictor, hu: np.ndarray, severity) -> float:
    """The model's case extent (%) for a modified working-grid HU volume (same tiles): the
    lung-weighted mean of the tiles' fractions, or of their fused extents for a pattern model
    with a ``fusion`` block (what its ``emphysema`` explanations explain, :mod:`.fused_target`)."""
    grid, tiles = severity.grid, severity.tiles
    lung = grid.labels > 0
    again, _ = extract_tiles(hu, lung, tiles.corners, tiles.size, tiles.slices)
    if predictor.fusion:
        fractions = tile_extents(predictor.model, predictor.fusion, float(grid.spacing[0]), again.images)
    else:
        fractions = predictor.run_tiles(again.images)["fraction"].numpy()
    counts = again.lung_count
    return float(100.0 * (fractions * counts).sum() / counts.sum())


def _curve(predictor, severity, order: np.ndarray, start_hu: np.ndarray, source_hu: np.ndarray,
           ends: tuple = (None, None)) -> list:
    """Extent after writing ``source_hu`` into ``start_hu`` at the first f of ``order`` (flat indices).

    ``ends``: the extents at fraction 0 (``start_hu`` itself) and 1 (``source_hu`` on every voxel
    of ``order``, i.e. every lung voxel) when already known: the same for every order, so
    :func:`case_faithfulness` computes them once instead of once per curve."""
    values = []
    for fraction in FRACTIONS:
        known = ends[0] if fraction == 0 else ends[1] if fraction == 1 else None
        if known is not None:
            values.append(known)
            continue
        hu = start_hu.copy().ravel()
        k = int(round(fraction * len(order)))
        hu[order[:k]] = source_hu.ravel()[order[:k]]
        values.append(model_extent(predictor, hu.reshape(start_hu.shape), severity))
    return values


def _auc(curve, reference: float) -> float | None:
    if reference <= 1e-6:
        return None
    return float(np.trapezoid(np.asarray(curve) / reference, FRACTIONS))


def _order(attribution_flat: np.ndarray, lung_idx: np.ndarray, rng) -> np.ndarray:
    """Lung voxels by decreasing attribution, ties (e.g. unexplained tiles) in random order."""
    jitter = rng.random(len(lung_idx)) * 1e-12
    values = attribution_flat[lung_idx]
    scale = np.abs(values).max() or 1.0
    return lung_idx[np.argsort(-(values / scale + jitter), kind="stable")]


def randomized(model, seed: int = 0) -> torch.nn.Module:
    """A copy of ``model`` with every layer re-initialised (weights and batch-norm statistics)."""
    torch.manual_seed(seed)
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if hasattr(module, "reset_parameters") and module is not clone:
            module.reset_parameters()
    return clone.eval()


def _with_model(predictor, model, severity):
    """``severity`` re-weighted by another model's attention pooling over the same tiles (a
    pattern model weights tiles by their lung voxels, whatever the network: unchanged)."""
    import dataclasses

    if not hasattr(model, "case"):
        return severity

    out = predictor.run_tiles(severity.tiles.images, model=model)
    counts = torch.from_numpy(severity.tiles.lung_count.astype(np.float32))
    with torch.no_grad():
        case = model.case(out, counts / severity.tiles.images[0].size)
    return dataclasses.replace(severity, patch_weights=case["patch_weights"].numpy())


def lung_ssim(a: np.ndarray, b: np.ndarray, lung: np.ndarray) -> float:
    """SSIM of two maps (each scaled by its largest magnitude) averaged over lung voxels. The
    data range given to SSIM is that of the scaled maps: 1 when both are non-negative (Grad-CAM,
    attention: values in [0, 1]), 2 when either is signed (integrated gradients: [-1, 1])."""
    from skimage.metrics import structural_similarity

    def scaled(v):
        m = np.abs(v[lung]).max()
        return (v / m if m > 0 else v).astype(np.float64)

    span = 2.0 if (a[lung].min() < 0 or b[lung].min() < 0) else 1.0
    if min(lung.shape) < 7:   # SSIM's 7-voxel window: compare slice by slice
        maps = [structural_similarity(x, y, data_range=span, full=True)[1] for x, y in zip(scaled(a), scaled(b))]
        return float(np.stack(maps)[lung].mean())
    _, full = structural_similarity(scaled(a), scaled(b), data_range=span, full=True)
    return float(full[lung].mean())


def case_faithfulness(predictor, severity, lesion: np.ndarray | None, methods, *, tolerance: int = 2,
                      top_tiles: int = 96, seed: int = 0, randomize: bool = True) -> dict:
    """method -> figures for one graded case; ``lesion``: (z, y, x) mask on the working grid, or
    None (real data: the LAA map takes its place for the pointing game and Dice)."""
    from scipy.ndimage import binary_dilation
    from scipy.stats import spearmanr

    rng = np.random.default_rng([seed, 11])
    grid = severity.grid
    lung = grid.labels > 0
    lung_idx = np.flatnonzero(lung)
    hu = grid.hu
    normal = np.where(lung, np.float32(NORMAL_LUNG_HU), hu)
    original = model_extent(predictor, hu, severity)
    emptied = model_extent(predictor, normal, severity)     # every lung voxel normal: the end of deletion
    deleting, inserting = (original, emptied), (emptied, original)   # the ends of the curves, see _curve
    target = (lesion > 0) & lung if lesion is not None else (hu <= EMPHYSEMA_HU) & lung
    random_order = lung_idx[rng.permutation(len(lung_idx))]
    laa_order = lung_idx[np.argsort(hu.ravel()[lung_idx], kind="stable")]
    shared = {"deletion_auc_random": _auc(_curve(predictor, severity, random_order, hu, normal, deleting), original),
              "deletion_auc_laa": _auc(_curve(predictor, severity, laa_order, hu, normal, deleting), original)}
    near = binary_dilation(target, iterations=tolerance) if tolerance else target
    k = int(target.sum())
    out = {}
    for method in methods:
        attribution, chosen = working_attribution(predictor.model, severity, method, top_tiles=top_tiles,
                                                  fusion=predictor.fusion)
        explained = lung & (paint_tiles(lung.shape, severity.tiles.corners[chosen], np.ones(len(chosen)),
                                        severity.tiles.size, severity.tiles.slices) > 0)
        flat = attribution.ravel()
        order = _order(flat, lung_idx, rng)
        figures = {"deletion_auc": _auc(_curve(predictor, severity, order, hu, normal, deleting), original),
                   "insertion_auc": _auc(_curve(predictor, severity, order, normal, hu, inserting), original), **shared,
                   "extent_pct": original, "tiles_explained": len(chosen)}
        if k > 0 and flat[lung_idx].max() > 0:
            figures["pointing_game"] = float(near.ravel()[order[0]])
            top = np.zeros(lung.size, bool)
            top[order[:k]] = True
            figures["dice_topk"] = float(2 * (top & target.ravel()).sum() / (2 * k))
        else:
            figures["pointing_game"] = figures["dice_topk"] = None
        if randomize:
            noise_model = randomized(predictor.model, seed)
            other = _with_model(predictor, noise_model, severity)
            random_map, _ = working_attribution(noise_model, other, method, chosen=chosen, fusion=predictor.fusion)
            # SSIM where either map says something: two maps that are both 0 over most of the lung
            # (ReLU'd Grad-CAM) agree trivially there; the whole-lung figure is kept beside it
            support = explained & ((attribution != 0) | (random_map != 0))
            figures["randomization_ssim"] = lung_ssim(attribution, random_map,
                                                      support if support.sum() >= 64 else explained)
            figures["randomization_ssim_lung"] = lung_ssim(attribution, random_map, explained)
            a, b = attribution[explained], random_map[explained]
            # a constant map (e.g. a randomised model whose Grad-CAM is 0 everywhere after the ReLU)
            # has no ranks: the correlation is undefined, not 0
            constant = bool(np.ptp(a) == 0 or np.ptp(b) == 0)
            figures["randomization_spearman"] = None if constant else float(spearmanr(a, b).statistic)
            figures["randomization_map_empty"] = bool(not np.any(b))
        out[method] = figures
    return out
