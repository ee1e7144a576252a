"""Air measured in the scan: its noise, the tracheal air at full resolution, the peak of outside air.

:func:`air_noise` gives quality control's air HU and noise SD (outside the body when there is
enough of it, else in the trachea); :func:`trachea_air` and :func:`air_mode` give the air
references of calibrated densitometry (``calibration.py``). Values in HU, sizes in mm.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..volume import CTVolume
from .anatomy import MIN_SLICES_3D, PADDING_BELOW_HU, coarse_anatomy, coarse_steps, robust_noise

MIN_AIR_VOXELS = 2000           # outside-air voxels (coarse grid) enough to measure air there
TRACHEA_MAX_AREA_MM2 = 800.0    # air in the body on a slice above the apices up to this is trachea
#: Tracheal air core: lumen voxels at least this far (mm, and TRACHEA_CORE_PIXELS pixels)
#: from the lumen edge, so that neither the wall's partial volume nor the blur reaches them.
TRACHEA_CORE_MM = 3.0
TRACHEA_CORE_PIXELS = 2.0
TRACHEA_MIN_CORE_SLICE = 10      # core voxels for a slice to count
TRACHEA_MIN_CORE_VOXELS = 200    # core voxels in all, else the trachea is too narrow for its voxels
TRACHEA_LUMEN_HU = -500          # lumen edge: half-way between air and the wall
TRACHEA_LUMEN_MAX_MM2 = 600.0    # a bigger air component is not the trachea (merged, larynx)
TRACHEA_SEARCH_MM = 40.0         # the trachea is looked for this far around its place above


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
        trachea = _coarse_trachea_air(ct, anatomy)
        if trachea.sum() >= 50:
            air, source = anatomy.hu[trachea], "trachea"
        else:
            air, source = anatomy.hu[anatomy.valid & (anatomy.hu < -900)], "darkest_voxels"
    air_hu = round(float(np.median(air)), 1) if air.size else None
    noise = round(robust_noise(air), 2) if source != "darkest_voxels" else None
    return air_hu, noise, source


def measure_air_noise(ct: CTVolume) -> float | None:
    """Noise SD (HU) of the scan measured in air (see :func:`air_noise`)."""
    return air_noise(ct)[1]


def trachea_air(ct: CTVolume, anatomy=None) -> dict:
    """Air in the trachea at full resolution: ``{"hu", "voxels", "level", "note"}``.

    The trachea is seeded by the coarse anatomy (air in the body above the lung apices,
    :func:`_coarse_trachea_air`), followed down at full in-plane resolution (one slice per coarse
    slice) as the air component (below :data:`TRACHEA_LUMEN_HU`, at most
    :data:`TRACHEA_LUMEN_MAX_MM2`) overlapping the one above, until it divides at the carina
    or joins bigger air. Its core is the lumen at least :data:`TRACHEA_CORE_MM` mm and
    :data:`TRACHEA_CORE_PIXELS` pixels from the lumen edge (geometry, not an HU window around
    air, so a rescaled scan selects the same voxels); ``hu`` is the core's median HU. The
    intrathoracic trachea (slices with lung) is used when it has :data:`TRACHEA_MIN_CORE_VOXELS`
    core voxels (``level`` ``intrathoracic``; in the neck, the shoulders bias air upwards),
    else every slice followed (``level`` ``all``). ``hu`` is None with a ``note`` when the
    trachea is not in the scan or too narrow for the voxel size (e.g. 4 mm pixels: no voxel
    of an 18 mm trachea is clear of partial volume).
    """
    out = {"hu": None, "voxels": 0, "level": None, "note": None}
    anatomy = anatomy or coarse_anatomy(ct.hu, ct.spacing, ct.padding_hu)
    seeds = _coarse_trachea_air(ct, anatomy)
    if not seeds.any():
        out["note"] = "trachea not found above the lung apices"
        return out
    sz, sxy = coarse_steps(ct.shape, ct.spacing)
    ny, nx = ct.shape[1:]
    rows, cols = np.arange(ny) // sxy, np.arange(nx) // sxy
    pixel_mm2 = float(ct.spacing[0] * ct.spacing[1])
    core_mm = max(TRACHEA_CORE_MM, TRACHEA_CORE_PIXELS * max(ct.spacing[0], ct.spacing[1]))
    lung_mm2 = anatomy.lung_air.sum(axis=(1, 2)) * anatomy.spacing[0] * anatomy.spacing[1]
    down = -1 if ct.direction_matrix[2, 2] > 0 else 1
    seeded = np.flatnonzero(seeds.any(axis=(1, 2)))
    k = int(seeded[0] if down < 0 else seeded[-1])  # the seed slice nearest the apices
    previous = np.zeros((ny, nx), bool)
    ys, xs = np.nonzero(seeds[k])
    previous[np.minimum(ys * sxy, ny - 1), np.minimum(xs * sxy, nx - 1)] = True
    cores = {"intrathoracic": [], "all": []}
    first = True
    margin = int(np.ceil(TRACHEA_SEARCH_MM / min(ct.spacing[0], ct.spacing[1])))
    while 0 <= k < anatomy.hu.shape[0]:
        z = min(k * sz, ct.shape[0] - 1)
        if first:  # the seed slice: the whole slice, to find the midline
            y0, y1, x0, x1 = 0, ny, 0, nx
        else:  # then a window around the trachea above (it moves a few mm per slice)
            ys, xs = np.nonzero(previous)
            y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, ny)
            x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, nx)
        image = ct.hu[z, y0:y1, x0:x1]
        body = anatomy.body[k][np.ix_(np.minimum(rows[y0:y1], anatomy.body.shape[1] - 1),
                                      np.minimum(cols[x0:x1], anatomy.body.shape[2] - 1))]
        lumen = body & (image < TRACHEA_LUMEN_HU)
        if ct.padding_hu is not None:
            lumen &= image != ct.padding_hu
        labels, _ = ndimage.label(lumen)
        touching = np.unique(labels[previous[y0:y1, x0:x1] & lumen])
        touching = touching[touching > 0]
        if first and len(touching) > 1:  # the air nearest the body's midline
            middle = np.flatnonzero(body.any(axis=0)).mean() if body.any() else nx / 2
            centres = ndimage.center_of_mass(lumen, labels, touching)
            touching = touching[[int(np.argmin([abs(c[1] - middle) for c in centres]))]]
        first = False
        if len(touching) != 1:
            break  # lost, or divided at the carina
        component = labels == touching[0]
        edge = (y0 > 0 and component[0].any()) or (y1 < ny and component[-1].any()) or \
            (x0 > 0 and component[:, 0].any()) or (x1 < nx and component[:, -1].any())
        if edge or component.sum() * pixel_mm2 > TRACHEA_LUMEN_MAX_MM2:
            break  # joined bigger air
        distance = ndimage.distance_transform_edt(component, sampling=(ct.spacing[1], ct.spacing[0]))
        core = distance >= core_mm
        if core.sum() >= TRACHEA_MIN_CORE_SLICE:
            values = image[core]
            cores["all"].append(values)
            if lung_mm2[k] > TRACHEA_MAX_AREA_MM2:
                cores["intrathoracic"].append(values)
        previous = np.zeros((ny, nx), bool)
        previous[y0:y1, x0:x1] = ndimage.binary_dilation(component, iterations=2)
        k += down
    for level in ("intrathoracic", "all"):
        values = np.concatenate(cores[level]) if cores[level] else np.zeros(0)
        if values.size >= TRACHEA_MIN_CORE_VOXELS:
            out.update(hu=round(float(np.median(values)), 1), voxels=int(values.size), level=level)
            return out
    found = sum(v.size for v in cores["all"])
    out["note"] = (f"trachea too narrow for the voxel size: {found} core voxels at {core_mm:.1f} mm or more "
                   f"from its wall (< {TRACHEA_MIN_CORE_VOXELS})")
    return out


def _coarse_trachea_air(ct: CTVolume, anatomy) -> np.ndarray:
    """Air of the trachea: air inside the body on the slices above the lung apices.

    Returns a (z, y, x) bool mask on the coarse grid, eroded in-plane so that partial-volume
    edges do not count; empty when the scan starts below the apices or is not axial.
    """
    mask = np.zeros_like(anatomy.lung_air)
    D = ct.direction_matrix
    if abs(D[2, 2]) < 0.9 or ct.shape[0] < MIN_SLICES_3D:
        return mask
    areas_mm2 = anatomy.lung_air.sum(axis=(1, 2)) * anatomy.spacing[0] * anatomy.spacing[1]
    order = range(len(areas_mm2) - 1, -1, -1) if D[2, 2] > 0 else range(len(areas_mm2))
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    for k in order:  # from the head down, while only the trachea is air
        if 0 < areas_mm2[k] <= TRACHEA_MAX_AREA_MM2:
            mask[k] = anatomy.lung_air[k]
        elif areas_mm2[k] > TRACHEA_MAX_AREA_MM2:
            break
    return ndimage.binary_erosion(mask, structure=structure)


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
