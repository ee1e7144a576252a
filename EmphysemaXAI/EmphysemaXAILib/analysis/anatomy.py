"""Coarse anatomy for quality control: field of view, body, air outside and inside the body.

Works on a subsampled copy of the volume (in-plane at most :data:`QC_MAX_INPLANE` voxels,
slices at least :data:`QC_MIN_SLICE_MM` apart) so that it costs well under a second on a
512 x 512 x 400 scan. All masks are (z, y, x) booleans on that coarse grid; ``scale`` gives the
voxel volume in mm3 of one coarse voxel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

QC_MAX_INPLANE = 192
QC_MIN_SLICE_MM = 2.5
#: Below this HU a voxel is padding / outside the reconstructed field of view.
PADDING_BELOW_HU = -1024
BODY_HU = -500
AIR_IN_BODY_HU = -400
#: Fewer slices than this are too few for 3D analysis (quality control warns, and does not
#: look for the trachea on the coarse grid).
MIN_SLICES_3D = 10


@dataclass
class CoarseAnatomy:
    """Masks of a coarse copy of the scan (all (z, y, x) bool on the coarse grid)."""

    hu: np.ndarray          # coarse HU (float32)
    valid: np.ndarray       # inside the reconstructed field of view
    body: np.ndarray        # largest connected non-air object, holes filled slice by slice
    outside_air: np.ndarray  # air clear of the body and of other objects (table, clothes)
    lung_air: np.ndarray    # air enclosed by the body (lungs, airways, some bowel gas)
    spacing: tuple          # coarse voxel size (x, y, z) mm
    voxel_mm3: float


def coarse_steps(shape, spacing) -> tuple:
    """(slice step, in-plane step) of the coarse grid of a (z, y, x) ``shape`` with ``spacing``."""
    z, y, x = shape
    inplane = max(1, int(np.ceil(max(y, x) / QC_MAX_INPLANE)))
    slices = max(1, int(QC_MIN_SLICE_MM // max(spacing[2], 1e-6)))
    return slices, inplane




def padding_mask(hu: np.ndarray, padding_hu: float | None = None) -> np.ndarray:
    """bool (z, y, x) of ``hu``'s voxels outside the reconstructed field of view: below
    :data:`PADDING_BELOW_HU`, or equal to the series' PixelPaddingValue ``padding_hu`` (HU)."""
    padding = hu < PADDING_BELOW_HU
    if padding_hu is not None:
        padding |= hu == padding_hu
    return padding


def coarse_anatomy(hu: np.ndarray, spacing, padding_hu: float | None = None) -> CoarseAnatomy:
    """Body, field-of-view and air masks of a CT volume.

    Args:
        hu: (z, y, x) HU volume.
        spacing: (x, y, z) voxel size in mm.
        padding_hu: the series' PixelPaddingValue in HU, treated as outside the field of view.
    """
    sz, sxy = coarse_steps(hu.shape, spacing)
    small = np.asarray(hu[::sz, ::sxy, ::sxy], dtype=np.float32)
    coarse_spacing = (spacing[0] * sxy, spacing[1] * sxy, spacing[2] * sz)
    valid = small >= PADDING_BELOW_HU
    if padding_hu is not None:
        valid &= small != np.float32(padding_hu)

    dense = valid & (small > BODY_HU)
    labels, count = ndimage.label(dense)
    body = np.zeros_like(dense)
    if count:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        body = labels == int(np.argmax(sizes))
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])

    margin = max(1, int(round(10.0 / max(coarse_spacing[0], 1e-6))))
    others = ndimage.binary_dilation(dense | body, iterations=margin)
    outside_air = valid & ~others & (small < BODY_HU)
    lung_air = body & valid & (small < AIR_IN_BODY_HU)
    lung_air = ndimage.binary_opening(lung_air, iterations=1) if lung_air.shape[0] > 2 else lung_air
    return CoarseAnatomy(hu=small, valid=valid, body=body, outside_air=outside_air,
                         lung_air=lung_air, spacing=coarse_spacing,
                         voxel_mm3=float(np.prod(coarse_spacing)))


def robust_noise(values: np.ndarray) -> float:
    """Noise SD (HU) of a nominally uniform region, robust to clipping and to outliers.

    Scanners clip air at -1024 HU, which cuts off the lower half of its noise, and air regions
    pick up streaks, table edges and foam: the SD is taken from the median deviation of the
    values above the median (half-normal: median deviation = 0.6745 SD).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 50:
        return float("nan")
    median = np.median(values)
    upper = values[values > median] - median
    if upper.size < 25:
        return 0.0
    return float(np.median(upper) / 0.6745)
