"""Lung regions by name (``contracts.md``): whole, right, left, thirds, lobes.

Thirds are cut as the Chest Imaging Platform cuts them (checked against CIP's own ct-64 label
map): along the head-foot axis, the slices of the whole lung (both lungs together) are split
into three parts of equal lung volume, counting from the top; a slice belongs to the third in
which the lung volume above it falls (``floor(3 * volume_above / total)``), and the same cut
applies to each lung.
"""
from __future__ import annotations

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


def region_masks(labels: np.ndarray, lobes: np.ndarray | None = None,
                 superior_is_high_index: bool = True) -> dict:
    """Boolean (z, y, x) mask per region name (lobes only when a lobe map is given).

    Args:
        labels: lung label map (0 background, 1 right, 2 left).
        lobes: optional lobe map with lungmask's LTRCLobes codes.
    """
    right, left = labels == RIGHT, labels == LEFT
    whole = right | left
    thirds = slice_thirds(whole, superior_is_high_index)
    masks = {"whole": whole, "right": right, "left": left}
    for index, third in enumerate(THIRDS):
        in_third = (thirds == index)[:, None, None]
        masks[third] = whole & in_third
        masks[f"right_{third}"] = right & in_third
        masks[f"left_{third}"] = left & in_third
    if lobes is not None:
        for name, code in LOBE_CODES.items():
            masks[name] = lobes == code
    return masks
