"""Airways of the classical engine: find the trachea, grow the airway tree, or track it slice by slice.

The trachea is the trachea-sized section at the top that runs furthest down as a tube
(:func:`_find_trachea`); region growing from it over voxels below an airway threshold, lowered
step by step while the grown volume exceeds what a trachea with main and lobar bronchi can hold
(a leak into emphysematous lung); after a leak, slice-by-slice tracking of the trachea and
bronchi (:func:`_track_airways`). Thresholds are in HU and sizes in mm; ``D`` is the volume's
3 x 3 direction matrix (LPS), which says which index end is the head.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

AIRWAY_START_HU = -950.0
AIRWAY_MIN_HU = -1010.0
AIRWAY_MAX_ML = 200.0           # trachea + main + lobar bronchi hold well under this
TRACHEA_AREA_MM2 = (40.0, 800.0)
TRACHEA_MIN_RUN_MM = 15.0      # the trachea runs at least this far as a tube below its seed
TRACK_MAX_AREA = 2.0           # a section above this x the trachea's has merged with lung
TRACK_FREED_SHARE = 0.75       # a freed piece is at most this share of a free section's bound
TRACK_MAX_EROSION_MM = 4.0     # in-plane erosion that may free an airway touching the lung
TRACK_LUMEN_HU = (-400.0, -600.0, -800.0)  # lumen levels tried inside a merged section
TRACK_MIN_SECTION_MM2 = 20.0   # a freed section smaller than this is not a main / lobar bronchus


def grow_airways(hu, candidates, spacing, D, voxel_ml, warnings) -> np.ndarray:
    """The airway lumen (bool, on ``hu``'s (z, y, x) grid) inside the lung ``candidates``: region
    growing from the trachea seed, else slice-by-slice tracking after a leak (with a warning);
    empty when no trachea is found, or (with a warning) when neither stays out of the lung."""
    seed = _find_trachea(hu, candidates, spacing, D)
    if seed is None:
        return np.zeros(hu.shape, bool)
    zs = np.flatnonzero(candidates.any(axis=(1, 2)))
    ys = np.flatnonzero(candidates.any(axis=(0, 2)))
    xs = np.flatnonzero(candidates.any(axis=(0, 1)))
    box = (slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    local_seed = (seed[0] - zs[0], seed[1] - ys[0], seed[2] - xs[0])
    sigma = np.array([1.0 / spacing[2], 1.0 / spacing[1], 1.0 / spacing[0]]) * 0.7
    smooth = ndimage.gaussian_filter(hu[box].astype(np.float32), sigma)  # tames noise leaks
    cand = candidates[box]
    threshold = AIRWAY_START_HU
    while threshold >= AIRWAY_MIN_HU:
        lumen = cand & (smooth < threshold)
        parts, _ = ndimage.label(lumen)
        label = parts[local_seed]
        if label:
            grown = parts == label
            if grown.sum() * voxel_ml <= AIRWAY_MAX_ML:
                out = np.zeros(hu.shape, bool)
                out[box] = grown
                return out
        threshold -= 15.0
    tracked = _track_airways(hu, candidates, seed, spacing, D)
    if tracked.any():
        warnings.append("3D airway growing leaked into the lung; airways traced slice by slice "
                        "(trachea and main bronchi)")
        return tracked
    warnings.append("airway region growing leaked into the lung: airways kept in the lung mask")
    return np.zeros(hu.shape, bool)


def _superior_order(n: int, D) -> np.ndarray:
    return np.arange(n)[::-1] if D[2, 2] >= 0 else np.arange(n)


def _find_trachea(hu, candidates, spacing, D) -> tuple | None:
    """(z, y, x) seed inside the trachea, or None.

    Candidates are the enclosed-air sections of trachea size (``TRACHEA_AREA_MM2``) on the
    upper quarter of the lung slices. The trachea is the one that runs furthest toward the feet
    as a tube (:func:`_tube_run`), at least ``TRACHEA_MIN_RUN_MM``: a lung apex widens within
    a few slices. Position is not used, so a field of view that cuts one side of the chest
    (which moves the image's middle off the body's midline) does not mislead it; the midline
    only breaks ties."""
    pixel_mm2 = spacing[0] * spacing[1]
    lo, hi = TRACHEA_AREA_MM2
    lung_slices = np.flatnonzero(candidates.any(axis=(1, 2)))
    if len(lung_slices) < 3:
        return None
    order = [k for k in _superior_order(hu.shape[0], D) if k in set(lung_slices.tolist())]
    step = -1 if D[2, 2] >= 0 else 1  # toward the feet
    xs = np.flatnonzero(candidates.any(axis=(0, 1)))
    x_mid = (xs[0] + xs[-1]) / 2.0
    labelled = {}  # slice -> its air components; the tube runs of successive seeds share slices

    def components(k):
        if k not in labelled:
            labelled[k] = ndimage.label(candidates[k])[0]
        return labelled[k]

    best, best_key = None, None
    for k in order[: max(3, len(order) // 4)]:
        parts = components(k)
        areas = np.bincount(parts.ravel()) * pixel_mm2
        for label in np.flatnonzero((areas >= lo) & (areas <= hi)):
            if label == 0:
                continue
            section = parts == label
            run_mm = _tube_run(components, candidates.shape[0], k, section, step) * spacing[2]
            ys, xs_ = np.nonzero(section)
            key = (run_mm, -abs(xs_.mean() - x_mid))
            if run_mm >= TRACHEA_MIN_RUN_MM and (best_key is None or key > best_key):
                # the seed: the section's darkest voxel (lumen, not its partial-volume rim)
                darkest = int(np.argmin(ndimage.uniform_filter(hu[k].astype(np.float32), 3)[ys, xs_]))
                best, best_key = (k, int(ys[darkest]), int(xs_[darkest])), key
    return best


def _tube_run(components, n_slices, k, section, step) -> int:
    """Slices below ``section`` (on slice ``k`` of ``n_slices``) over which the air it continues
    into stays a tube: one overlapping component (``components(k)``: a slice's labelled air) of
    at most ``TRACK_MAX_AREA`` times its area."""
    area = section.sum()
    run = 0
    k += step
    while 0 <= k < n_slices:
        parts = components(k)
        hit = np.unique(parts[section & (parts > 0)])
        if len(hit) != 1:
            break
        section = parts == hit[0]
        if section.sum() > TRACK_MAX_AREA * area:
            break
        run += 1
        k += step
    return run


def _track_airways(hu, candidates, seed, spacing, D) -> np.ndarray:
    """Trace the trachea and main bronchi slice by slice from the trachea seed toward the feet.

    On each axial slice an airway section is an enclosed-air component (``candidates``) that
    overlaps the previous slice's airway. A component larger than ``TRACK_MAX_AREA`` times
    the seed section has merged in-plane with lung (on 4 mm grids the trachea's partial-volume
    wall reads below -400 HU where it touches the lung): :func:`_free_section` then looks for
    the airway inside it; when none comes free, the branch has entered the lung and ends.
    Tracking ends on the slice whose sections together exceed that bound (airways narrow
    toward the feet; more air than that is lung let in, e.g. noisy parenchyma split into
    lumen-dark pieces). Returns the (z, y, x) bool airway lumen.
    """
    out = np.zeros(hu.shape, bool)
    k0, y0, x0 = seed
    parts, _ = ndimage.label(candidates[k0])
    current = parts == parts[y0, x0]
    max_area = TRACK_MAX_AREA * current.sum()
    min_area = max(2, int(np.ceil(TRACK_MIN_SECTION_MM2 / (spacing[0] * spacing[1]))))
    max_erosion = max(1, int(round(TRACK_MAX_EROSION_MM / min(spacing[0], spacing[1]))))
    step = -1 if D[2, 2] >= 0 else 1  # toward the feet
    out[k0] = current
    k = k0 + step
    seen = 1
    while 0 <= k < hu.shape[0] and current.any():
        if seen <= 3:  # the trachea's size: its largest section on the first slices
            max_area = max(max_area, TRACK_MAX_AREA * current.sum())
        seen += 1
        parts, count = ndimage.label(candidates[k])
        near = ndimage.binary_dilation(current)
        sections = np.zeros_like(current)
        for label in np.unique(parts[near & (parts > 0)]):
            part = parts == label
            if part.sum() <= max_area:
                sections |= part
            else:
                sections |= _free_section(part, hu[k], near, max_area, min_area, max_erosion)
        if sections.sum() > max_area:  # more than the trachea's two bronchi: a leak into the lung
            break
        current = sections
        out[k] = current
        k += step
    return out


def _free_section(part, hu, near, max_area, min_area, max_erosion) -> np.ndarray:
    """The airway section inside ``part``, one slice's air component that merged with lung.

    The lumen is darker than its partial-volume wall, and joined to the lung by a thin
    bridge: ``part`` is re-thresholded at the ``TRACK_LUMEN_HU`` levels and, failing that,
    eroded in-plane (up to ``max_erosion`` steps), until every piece overlapping ``near``
    (the previous airway, dilated; two below the carina) is at most ``TRACK_FREED_SHARE``
    of ``max_area``. Those pieces, grown back inside the level's mask by the erosion steps, are the
    section when they hold at least ``min_area`` pixels; else it is empty (the branch entered
    the lung)."""
    for steps in range(0, max_erosion + 1):
        for level in TRACK_LUMEN_HU:
            mask = part & (hu < level)
            eroded = ndimage.binary_erosion(mask, iterations=steps) if steps else mask
            pieces, _ = ndimage.label(eroded)
            hit = np.unique(pieces[near & (pieces > 0)])
            if not hit.size:
                continue
            sizes = np.bincount(pieces.ravel())[hit]
            if sizes.max() <= TRACK_FREED_SHARE * max_area:
                piece = np.isin(pieces, hit)
                if steps:
                    piece = ndimage.binary_dilation(piece, iterations=steps, mask=mask)
                return piece if sizes.sum() >= min_area else np.zeros_like(part)
    return np.zeros_like(part)
