"""Lung regions by name (``docs/contracts.md``): whole, right, left, thirds, lobes.

Thirds are cut as the Chest Imaging Platform cuts them (``CIPLabelLungRegionsImageFilter::
SetLungThirds``): the voxels of the whole lung (both lungs together) are tallied in raster order
(x fastest, then y, then z) from the foot end; tally <= N/3 (integer division) is the lower
third, <= 2N/3 the middle, the rest the upper third, so a boundary may fall inside a slice.
Each lung's thirds are its voxels in those whole-lung thirds. :func:`slice_thirds` is the
slice-level version used where a whole slice must belong to one third (phantom lesion zones).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIGHT, LEFT = 1, 2
#: lungmask LTRCLobes codes
LOBE_CODES = {"lul": 1, "lll": 2, "rul": 3, "rml": 4, "rll": 5}
THIRDS = ("upper", "middle", "lower")
REGION_NAMES = ("whole", "right", "left", "upper", "middle", "lower",
                "right_upper", "right_middle", "right_lower", "left_upper", "left_middle",
                "left_lower")
LOBE_NAMES = tuple(LOBE_CODES)


def slice_thirds(lung: np.ndarray, superior_is_high_index: bool = True) -> np.ndarray:
    """Third of each slice: 0 upper, 1 middle, 2 lower, -1 for slices without lung.

    Args:
        lung: (z, y, x) boolean whole-lung mask.
        superior_is_high_index: True when a larger z index is nearer the head (LPS direction
            with a positive z-z element, as DICOM axial series sorted by position are).
    Returns:
        (z,) int array.
    """
    counts = lung.reshape(lung.shape[0], -1).sum(axis=1).astype(np.int64)
    order = np.arange(len(counts))[::-1] if superior_is_high_index else np.arange(len(counts))
    total = counts.sum()
    thirds = np.full(len(counts), -1, dtype=np.int64)
    if total == 0:
        return thirds
    above = np.concatenate([[0], np.cumsum(counts[order])[:-1]])
    thirds[order] = np.minimum(3 * above // total, 2)
    thirds[counts == 0] = -1
    return thirds


@dataclass
class LungRegions:
    """Lung voxels gathered once, in CIP's tally order, with every region as a mask over them.

    ``masks[name]`` is a bool array over the gathered lung voxels; :meth:`gather` takes the
    values of any (z, y, x) volume at those voxels in the same order (one pass, no full-size
    mask per region).
    """

    lung: np.ndarray   # (z, y, x) bool lung mask (the volume's own index order)
    flip: bool         # the tally runs from the high z index (foot end there)
    masks: dict

    def gather(self, volume: np.ndarray) -> np.ndarray:
        if self.flip:
            return volume[::-1][self.lung[::-1]]
        return volume[self.lung]


def thirds_by_tally(n: int) -> np.ndarray:
    """Third of the n lung voxels in tally order (foot end first): 0 upper, 1 middle, 2 lower.

    CIP: tally <= n // 3 lower, <= 2 n // 3 middle, else upper (integer division).
    """
    third = np.zeros(n, np.int8)   # filled by slices: no int64 rank arrays of the lung's size
    third[:n // 3] = 2               # rank (1-based) <= n // 3
    third[n // 3:2 * n // 3] = 1     # rank <= 2 n // 3
    return third


def lung_regions(labels: np.ndarray, lobes: np.ndarray | None = None,
                 superior_is_high_index: bool = True) -> LungRegions:
    """Regions of project labels (1 right, 2 left), thirds cut as CIP cuts them, optional lobes.

    Args:
        labels: (z, y, x) lung labels.
        lobes: optional lobe map with lungmask's LTRCLobes codes.
        superior_is_high_index: True when a larger z index is nearer the head (LPS with a
            positive z-z direction element); the tally then starts at z index 0 (the feet).
    """
    lung = labels > 0
    regions = LungRegions(lung=lung, flip=not superior_is_high_index, masks={})
    side = regions.gather(labels)
    third = thirds_by_tally(side.size)
    masks = {"whole": np.ones(side.size, bool), "right": side == RIGHT, "left": side == LEFT}
    for index, name in enumerate(THIRDS):
        masks[name] = third == index
    for _, name in enumerate(THIRDS):
        masks[f"right_{name}"] = masks[name] & masks["right"]
    for _, name in enumerate(THIRDS):
        masks[f"left_{name}"] = masks[name] & masks["left"]
    regions.masks = {name: masks[name] for name in REGION_NAMES}
    if lobes is not None:
        lobe = regions.gather(lobes)
        for name, code in LOBE_CODES.items():
            regions.masks[name] = lobe == code
    return regions
