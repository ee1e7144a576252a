"""Blood in the scan: the contrast-enhancement check and unenhanced blood, the calibration's second reference.

Both look in the mediastinal box between the lungs, anterior to the spine, on the coarse grid of
:mod:`.anatomy`. Values in HU.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..volume import CTVolume
from .air import parabola_shift

CONTRAST_BLOOD_HU = 130.0          # blood above this is contrast enhanced (HU)
CONTRAST_MIN_ML = 15.0             # a blood pool, or soft tissue enough to measure blood (ml)
BLOOD_SEARCH_HU = (-60.0, 150.0)   # where the soft-tissue peak is looked for (HU)
BLOOD_WINDOW_HU = 40.0             # values within this of the peak make the estimate (HU)
THIN_BLOOD_MIN_VOXELS = 1000       # soft-tissue voxels enough on a 1-2 slice input (coarse grid)


def check_contrast(ct: CTVolume, anatomy, report) -> None:
    """Blood pool: the largest bright (120-600 HU) blob between the lungs, anterior to the spine,
    into ``report`` (a :class:`.qc.QCReport`: ``measures`` and ``warnings``).

    ``blood_hu`` (the calibration's second reference) is unenhanced blood measured by
    :func:`unenhanced_blood`; None when the scan is contrast enhanced. Inputs of one or two
    slices get ``blood_hu`` only (no blood-pool measure or warning: its 3D opening needs 3
    slices), from at least :data:`THIN_BLOOD_MIN_VOXELS` soft-tissue voxels, and none when a
    bright blob of the same test in-plane (:func:`_enhanced_in_plane`) shows contrast.
    """
    m = report.measures
    m["blood_pool_hu"] = m["blood_hu"] = None
    D = ct.direction_matrix
    if abs(D[1, 1]) < 0.9 or not anatomy.lung_air.any():
        return
    lung = anatomy.lung_air
    box = np.zeros_like(lung)
    for k in np.flatnonzero(lung.sum(axis=(1, 2)) > 0.02 * lung[0].size):
        xs = np.flatnonzero(lung[k].any(axis=0))
        ys = np.flatnonzero(anatomy.body[k].any(axis=1))
        front, back = (ys[0], ys[-1]) if D[1, 1] > 0 else (ys[-1], ys[0])
        y0, y1 = sorted((int(front + 0.15 * (back - front)), int(front + 0.6 * (back - front))))
        box[k, y0:y1 + 1, xs[0]:xs[-1] + 1] = True
    box &= anatomy.body & ~ndimage.binary_dilation(lung, iterations=1)
    if ct.shape[0] < 3:
        if not _enhanced_in_plane(anatomy, box):
            m["blood_hu"] = unenhanced_blood(anatomy.hu[box], anatomy.voxel_mm3, min_voxels=THIN_BLOOD_MIN_VOXELS)
        return
    bright = ndimage.binary_opening(box & (anatomy.hu >= 120) & (anatomy.hu <= 600), iterations=1)
    labels, count = ndimage.label(bright)
    if count:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        blob = labels == int(np.argmax(sizes))
        volume_ml = sizes.max() * anatomy.voxel_mm3 / 1000.0
        if volume_ml >= CONTRAST_MIN_ML:
            m["blood_pool_hu"] = round(float(np.median(anatomy.hu[blob])), 1)
            m["blood_pool_ml"] = round(volume_ml, 1)
    if m["blood_pool_hu"] is None:
        soft = anatomy.hu[box & (anatomy.hu > -20) & (anatomy.hu < 120)]
        m["blood_pool_hu"] = round(float(np.median(soft)), 1) if soft.size else None
    if m["blood_pool_hu"] is None or m["blood_pool_hu"] <= CONTRAST_BLOOD_HU:  # not enhanced
        m["blood_hu"] = unenhanced_blood(anatomy.hu[box], anatomy.voxel_mm3)
    if m["blood_pool_hu"] is not None and m["blood_pool_hu"] > CONTRAST_BLOOD_HU:
        report.warnings.append(f"contrast enhancement: blood pool at {m['blood_pool_hu']:.0f} HU "
                               "(> 100 HU): contrast raises lung density and lowers %LAA-950")


def unenhanced_blood(values: np.ndarray, voxel_mm3: float, min_voxels: int | None = None) -> float | None:
    """HU of unenhanced blood (heart and great vessels) from the values of the mediastinal box
    between the lungs: the median within :data:`BLOOD_WINDOW_HU` of the soft-tissue peak of
    their histogram (10 HU smoothing, refined by a parabola; the peak looked for in :data:`BLOOD_SEARCH_HU`, which
    leaves fat out and lets a scanner offset move the window with the tissue). None when less
    than :data:`CONTRAST_MIN_ML` of soft tissue (or, when given, fewer than ``min_voxels``
    voxels) is there, when the peak is at the edge of the
    search (no soft-tissue peak), or when it is enhanced (above :data:`CONTRAST_BLOOD_HU`)."""
    values = np.rint(np.asarray(values, np.float64))
    lo, hi = BLOOD_SEARCH_HU
    window = values[(values >= lo - BLOOD_WINDOW_HU) & (values <= hi + BLOOD_WINDOW_HU)]
    enough = window.size >= min_voxels if min_voxels is not None else \
        window.size * voxel_mm3 / 1000.0 >= CONTRAST_MIN_ML
    if not enough:
        return None
    start = int(lo - BLOOD_WINDOW_HU)
    counts = np.bincount((window - start).astype(np.int64)).astype(np.float64)
    smooth = ndimage.gaussian_filter1d(counts, 10.0, mode="constant")
    first, last = int(BLOOD_WINDOW_HU), int(BLOOD_WINDOW_HU + hi - lo)
    i = first + int(np.argmax(smooth[first:last + 1]))
    if i in (first, last):
        return None
    peak = start + i + parabola_shift(smooth, i)
    near = window[np.abs(window - peak) <= BLOOD_WINDOW_HU]
    blood = round(float(np.median(near)), 1)
    return blood if blood <= CONTRAST_BLOOD_HU else None


def _enhanced_in_plane(anatomy, box) -> bool:
    """Contrast on a 1-2 slice input: the largest 120-600 HU blob of the mediastinal box
    (opened in-plane) covers at least 400 mm2 (an aorta's cross-section) of one slice and its
    median is above :data:`CONTRAST_BLOOD_HU`."""
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    bright = ndimage.binary_opening(box & (anatomy.hu >= 120) & (anatomy.hu <= 600), structure=structure)
    labels, count = ndimage.label(bright, structure=structure)
    if not count:
        return False
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    if sizes.max() * anatomy.spacing[0] * anatomy.spacing[1] < 400.0:
        return False
    return float(np.median(anatomy.hu[labels == int(np.argmax(sizes))])) > CONTRAST_BLOOD_HU
