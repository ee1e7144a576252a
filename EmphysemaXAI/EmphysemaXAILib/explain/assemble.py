"""Attribution volumes of a case: tile maps -> working grid -> CT grid, and per-region scores.

Each tile's map is weighted by the tile's attention-pooling weight (times the number of tiles,
so the mean weight is 1), painted at the tile's place on the working grid, resampled linearly
onto the CT grid and zeroed outside the lung mask: a (z, y, x) float32 volume on the CT grid
(same shape, spacing, origin, direction as the CT). Expensive methods run on the ``top_tiles``
most-attended tiles only; the result says how many tiles each method covered.
Region scores are the seed's "explainable metrics": the share of the positive attribution that
falls in each lung region (whole = 1).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..analysis.regions import lung_regions
from ..model.tiles import from_working_grid, paint_maps
from ..packages import METHOD_PACKAGES, PIP_REQUIREMENTS
from .methods import EXPENSIVE, attribute_batches


@dataclass
class Explanation:
    method: str
    volume: np.ndarray          # (z, y, x) float32 on the CT grid, 0 outside the lung
    region_scores: dict         # region -> share of the positive attribution (None when empty)
    tiles_explained: int
    tiles_total: int
    seconds: float
    target: str = "emphysema"   # the output explained: emphysema or a pattern name
    explains: str = ""          # that output in words (:func:`explained_output`)

    def summary(self, file: str | None = None) -> dict:
        note = ("all lung tiles" if self.tiles_explained == self.tiles_total else
                f"the {self.tiles_explained} most-attended of {self.tiles_total} lung tiles only "
                "(an expensive method); the other tiles are 0")
        return {"file": file, "target": self.target, "explains": self.explains, "region_scores": self.region_scores,
                "tiles_explained": self.tiles_explained,
                "tiles_total": self.tiles_total, "coverage": note, "seconds": round(self.seconds, 2)}


#: the words :func:`explained_output` uses for a layer method's map of a fused extent (the report's
#: caption keys on them)
TEXTURE_ONLY = "through its texture term only"


def explained_output(target: str, fusion: dict | None, method: str) -> str:
    """What a map of ``method`` explains, in words (``summary.json`` ``explanations.<m>.explains``)."""
    if method == "attention":
        return "the pattern trunk's own spatial attention (the same whatever the target)"
    if target != "emphysema":
        return f"the tile's attention-pooled {target} logit (pattern trunk)"
    if not fusion:
        return "the logit of the tile's emphysema fraction"
    if method in ("gradcam", "gradcampp"):
        return (f"the logit of the tile's fused extent, {TEXTURE_ONLY} (a layer method "
                "sees the pattern trunk, not the density term)")
    return "the logit of the tile's fused extent (texture and local density terms)"


def region_scores(volume: np.ndarray, regions) -> dict:
    """Share of the positive attribution of ``volume`` in each region of ``regions``
    (:class:`~EmphysemaXAILib.analysis.regions.LungRegions` of the same grid)."""
    positive = np.clip(regions.gather(volume), 0, None)
    total = float(positive.sum())
    return {name: (float(positive[mask].sum() / total) if total > 0 else None) for name, mask in regions.masks.items()}


def explain_case(model, severity, ct, labels: np.ndarray, methods, *, lobes=None, top_tiles: int = 96,
                 ig_steps: int = 32, target: str = "emphysema", warnings: list | None = None,
                 fusion: dict | None = None, progress=None) -> dict:
    """method -> :class:`Explanation` of ``target`` (:data:`.methods.TARGETS`) for a case the
    model has graded (``severity`` is the :class:`~EmphysemaXAILib.model.case_extent.SeverityResult`).
    ``fusion``: the pattern model's ``fusion`` block (its predictor's ``fusion``), whose fused
    extent the ``emphysema`` target then explains (:mod:`.fused_target`).

    With a ``warnings`` list, a method whose package (captum, monai) is not installed is skipped
    and a warning says so (the other methods still run); without one, the ImportError is raised.
    ``progress(fraction, message)``: after each batch of tiles of each method."""
    regions = lung_regions(labels, lobes, severity.grid.superior_is_high_index)   # once for every method
    lung = regions.lung   # labels > 0
    out = {}
    for index, method in enumerate(methods):
        start = time.perf_counter()
        step = None
        if progress is not None:
            def step(done, total, method=method, index=index):
                progress((index + done / total) / len(methods),
                         f"explaining the model: {method}, tile {done} of {total}")
        try:
            working, chosen = working_attribution(model, severity, method, top_tiles=top_tiles, ig_steps=ig_steps,
                                                  target=target, fusion=fusion, progress=step)
        except ImportError as error:
            if warnings is None:
                raise
            package = (error.name or METHOD_PACKAGES.get(method) or "a package").split(".")[0]
            warnings.append(f"explanation {method} skipped: it needs the Python package {package}, which is not "
                            f"installed ({PIP_REQUIREMENTS.get(package, package)} enables it)")
            continue
        volume = from_working_grid(working, severity.grid, ct)   # float32 on the CT grid
        del working
        np.multiply(volume, lung, out=volume)   # in place: the CT-size volume exists once
        scores = region_scores(volume, regions)
        out[method] = Explanation(method, volume, scores, len(chosen), len(severity.tiles),
                                  time.perf_counter() - start, target, explained_output(target, fusion, method))
    return out


def working_attribution(model, severity, method: str, *, top_tiles: int = 96, ig_steps: int = 32,
                        chosen=None, target: str = "emphysema", fusion: dict | None = None,
                        progress=None) -> tuple:
    """(attribution volume on the working grid (z, y, x) float32, indices of the tiles explained);
    ``progress(done, total)`` after each batch of tiles; ``fusion``: as :func:`explain_case`."""
    tiles, grid = severity.tiles, severity.grid
    weights = severity.patch_weights * len(severity.patch_weights)
    priority = severity.patch_weights if severity.tile_priority is None else severity.tile_priority
    order = np.argsort(-priority, kind="stable")
    if chosen is None:
        chosen = np.sort(order[:top_tiles]) if method in EXPENSIVE else np.arange(len(tiles))
    volume = np.zeros(grid.hu.shape, np.float32)
    # batch after batch: each batch's maps are weighted and painted, then dropped (non-overlapping
    # tiles: the same volume as painting them all at once)
    for first, maps in attribute_batches(model, tiles.images[chosen], method, steps=ig_steps, target=target,
                                         fusion=fusion, pixel_mm=float(grid.spacing[0])):
        part = chosen[first:first + len(maps)]
        maps *= weights[part, None, None, None]
        paint_maps(grid.hu.shape, tiles.corners[part], maps, out=volume)
        if progress is not None:
            progress(first + len(maps), len(chosen))
    np.multiply(volume, grid.labels > 0, out=volume)
    return volume, chosen
