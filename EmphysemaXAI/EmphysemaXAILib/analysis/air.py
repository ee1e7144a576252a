"""Air measured in the scan: its noise, the tracheal air at full resolution, the peak of outside air.

:func:`air_noise` gives quality control's air HU and noise SD (outside the body when there is
enough of it, else in the trachea); :func:`trachea_air` and :func:`air_mode` give the air
references of calibrated densitometry (``calibration.py``). Values in HU, sizes in mm.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..segmentation.airways import CORE_MM, find_airways
from ..volume import CTVolume
from .anatomy import MIN_SLICES_3D, PADDING_BELOW_HU, coarse_anatomy, coarse_steps, padding_mask, robust_noise

MIN_AIR_VOXELS = 2000           # outside-air voxels (coarse grid) enough to measure air there
TRACHEA_MAX_AREA_MM2 = 800.0    # air in the body on a slice above the apices up to this is trachea
TRACHEA_MIN_CORE_SLICE = 10      # core voxels for a slice to count
TRACHEA_MIN_CORE_VOXELS = 200    # core voxels in all, else the trachea is too narrow for its voxels


def air_noise(ct: CTVolume, anatomy=None) -> tuple:
    """(air HU, noise SD HU, source) measured in air: outside the body when there is enough of
    it, else in the trachea; the noise is None when neither is found."""
    anatomy = anatomy or coarse_anatomy(ct.hu, ct.spacing, ct.padding_hu)
    outside = anatomy.outside_air
    if outside.shape[0] > 2:
        outside = ndimage.binary_erosion(outside, iterations=1)
    if outside.sum() >= MIN_AIR_VOXELS:
        air, source = anatomy.hu[outside], "outside_air"
    else:
        core = _trachea_core(ct)
        if core.sum() >= 50:
            air, source = ct.hu[core], "trachea"
        else:
            air, source = anatomy.hu[anatomy.valid & (anatomy.hu < -900)], "darkest_voxels"
    air_hu = round(float(np.median(air)), 1) if air.size else None
    noise = round(robust_noise(air), 2) if source != "darkest_voxels" else None
    return air_hu, noise, source


def _trachea_core(ct: CTVolume) -> np.ndarray:
    """The trachea's lumen core (bool (z, y, x)) from the one airway finder; empty when none."""
    if ct.shape[0] < MIN_SLICES_3D:
        return np.zeros(ct.shape, bool)
    found = find_airways(ct.hu, ct.spacing, ct.direction, padding=ct.hu < PADDING_BELOW_HU, bronchi=False)
    return found.core if found.core is not None else np.zeros(ct.shape, bool)


def measure_air_noise(ct: CTVolume) -> float | None:
    """Noise SD (HU) of the scan measured in air (see :func:`air_noise`)."""
    return air_noise(ct)[1]


def trachea_air(ct: CTVolume, anatomy=None) -> dict:
    """Air in the trachea at full resolution: ``{"hu", "voxels", "level", "note"}``.

    The trachea is the one airway finder's (:func:`..segmentation.airways.find_airways`: the
    longest tube of lumen sections on the body's middle, from the neck down to the carina,
    whatever the noise or the HU offset). Its core is the lumen at least ``CORE_MM`` mm and two
    pixels from the lumen edge (geometry, not an HU window around air, so a rescaled scan
    selects the same voxels); ``hu`` is the core's median HU. The intrathoracic trachea (slices
    with more than :data:`TRACHEA_MAX_AREA_MM2` of air enclosed by the body on the coarse grid)
    is used when it has :data:`TRACHEA_MIN_CORE_VOXELS` core voxels (``level``
    ``intrathoracic``; in the neck, the shoulders bias air upwards), else every slice of the
    trachea (``level`` ``all``). ``hu`` is None with a ``note`` when the trachea is not in the
    scan or too narrow for the voxel size (e.g. 4 mm pixels: no voxel of an 18 mm trachea is
    clear of partial volume).
    """
    out = {"hu": None, "voxels": 0, "level": None, "note": None}
    anatomy = anatomy or coarse_anatomy(ct.hu, ct.spacing, ct.padding_hu)
    if abs(ct.direction_matrix[2, 2]) < 0.9 or ct.shape[0] < MIN_SLICES_3D:
        out["note"] = "trachea not followed: too few axial slices"
        return out
    found = find_airways(ct.hu, ct.spacing, ct.direction, padding=padding_mask(ct.hu, ct.padding_hu),
                         bronchi=False)
    if not found.trachea.any():
        out["note"] = "trachea not found: no air tube on the body's middle"
        return out
    sz, _ = coarse_steps(ct.shape, ct.spacing)
    lung_mm2 = anatomy.lung_air.sum(axis=(1, 2)) * anatomy.spacing[0] * anatomy.spacing[1]
    thoracic = lung_mm2[np.minimum(np.arange(ct.shape[0]) // sz, len(lung_mm2) - 1)] > TRACHEA_MAX_AREA_MM2
    slices = found.core.sum(axis=(1, 2)) >= TRACHEA_MIN_CORE_SLICE
    for level, keep in (("intrathoracic", slices & thoracic), ("all", slices)):
        values = ct.hu[found.core & keep[:, None, None]]
        if values.size >= TRACHEA_MIN_CORE_VOXELS:
            out.update(hu=round(float(np.median(values)), 1), voxels=int(values.size), level=level)
            return out
    out["note"] = (f"trachea too narrow for the voxel size: {int(found.core.sum())} core voxels at "
                   f"{max(CORE_MM, 2.0 * max(ct.spacing[0], ct.spacing[1])):.1f} mm or more from its wall "
                   f"(< {TRACHEA_MIN_CORE_VOXELS})")
    return out


def air_mode(values: np.ndarray, smooth_hu: float = 10.0) -> float | None:
    """The peak (HU) of the histogram of air values: the mode of a 1 HU histogram smoothed by a
    Gaussian of ``smooth_hu``, refined by a parabola through the peak's bins.

    Outside air is mixed with clothes, blankets and the table (a tail towards higher HU) and
    clipped at -1024 HU by many scanners: the peak is robust to both where a median is not
    (the clipped bin and everything above -700 HU are left out of the search).
    """
    values = np.rint(np.asarray(values, np.float64))
    lo, hi = PADDING_BELOW_HU, -700
    values = values[(values > lo) & (values <= hi)]
    if values.size < 50:
        return None
    lowest = values.min()  # a pile of clipped voxels at the scanner's lowest value is not air's peak
    if (values == lowest).sum() > max(0.01 * values.size, 5 * ((values > lowest) & (values <= lowest + 5)).sum() / 5):
        values = values[values > lowest]
    counts = np.bincount((values - lo).astype(np.int64), minlength=hi - lo + 1).astype(np.float64)
    smooth = ndimage.gaussian_filter1d(counts, smooth_hu, mode="constant")
    i = int(np.argmax(smooth))
    return round(float(lo + i + (parabola_shift(smooth, i) if 0 < i < smooth.size - 1 else 0.0)), 1)


def parabola_shift(smooth: np.ndarray, i: int) -> float:
    """Sub-bin offset of the peak at bin ``i`` (0 < i < size - 1) of a smoothed histogram: the
    vertex of the parabola through bins i - 1, i, i + 1 (0 when they do not curve downward)."""
    a, b, c = smooth[i - 1], smooth[i], smooth[i + 1]
    denominator = a - 2 * b + c
    return 0.5 * (a - c) / denominator if denominator < 0 else 0.0
