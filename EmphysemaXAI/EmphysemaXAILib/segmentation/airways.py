"""The one airway finder: the trachea, the carina and the main (and lobar) bronchi of a chest CT.

Quality control's tracheal-air calibration and every segmentation engine use it
(:func:`find_airways`): the classical engine and lungmask remove its lumen from their lung
labels, and the Airways segment shows it (also beside a user's mask, which is not altered).

Arrays are (z, y, x); HU; sizes in mm; ``spacing`` is (x, y, z) mm and ``D`` the volume's 3 x 3
direction matrix (LPS), whose ``D[2, 2]`` sign says which index end is the head. Steps:

1. Trachea (:func:`find_trachea`), geometry first: on each axial slice smoothed in-plane by
   ``SMOOTH_MM``, the lumen sections are components below ``LUMEN_HU`` (the edge of the lumen,
   half-way between air and the wall: 500 HU from both, so HU offsets of tens of HU and 50 HU
   noise do not move it; measured with +37 / -40 HU and 50 HU added noise) of trachea size,
   near the body's middle and away from the image edge. Sections that continue one another
   from slice to slice as one tube (one overlapping section, area within ``TUBE_GROWTH``) form
   chains; the trachea is the longest chain (larynx to carina: a lung apex widens past the
   trachea's size within a few centimetres, the pharynx is wider), ties broken by the body's
   midline. The chain ends where the lumen divides or joins lung in-plane; below it the
   trachea is traced on (step 3) to the carina, the first slice where the airway is two
   sections.
2. Air level and noise (``air_hu``, ``noise_hu``): median and robust SD of the trachea's core
   (lumen at least ``CORE_MM`` from its edge); every later threshold is relative to them.
3. Main and lobar bronchi: traced slice by slice below the trachea (:func:`_track`), a
   section merged with lung is freed at air-relative lumen levels or by erosion
   (:func:`_free_section`), ``MAIN_BRONCHI_MM`` below the carina; with lung candidates
   given (classical engine), region growing on the smoothed volume at air-relative levels adds
   the lobar bronchi unless it leaks (more than ``AIRWAY_MAX_ML``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

LUMEN_HU = -500.0               # lumen edge for the trachea's geometry
SMOOTH_MM = 0.6                 # in-plane Gaussian (mm) before any threshold (noise specks)
TRACHEA_AREA_MM2 = (40.0, 800.0)
TRACHEA_MIN_RUN_MM = 20.0       # a trachea runs at least this far as a tube
TUBE_GROWTH = 2.0               # successive sections of a tube differ in area by at most this factor
MIDDLE_X_SHARE = 0.25           # a trachea section lies within this share of the body width of its middle
MIDDLE_Y_SHARE = 0.35           # ... and of the body height (not the table below the back)
CORE_MM = 3.0                   # the lumen core: at least this far (and 2 pixels) from the lumen edge
AIRWAY_MAX_ML = 200.0           # trachea + main + lobar bronchi hold well under this
GROW_ABOVE_AIR_HU = (50.0, -10.0)  # region growing levels relative to air, from first to last
BRONCHI_MM = 50.0               # airways are traced at most this far below the trachea's tube
MAIN_BRONCHI_MM = 20.0          # ... and this far below the carina (further down, lung joins them)
TRACK_MAX_AREA = 2.0            # a section above this x the trachea's has merged with lung
TRACK_FREED_SHARE = 0.75        # a freed piece is at most this share of the section bound
TRACK_MAX_EROSION_MM = 4.0      # in-plane erosion that may free an airway touching the lung
TRACK_LUMEN_SHARES = (0.4, 0.6, 0.8)  # lumen levels in a merged section: share of air's HU
TRACK_MIN_SECTION_MM2 = 20.0    # a freed section smaller than this is not a main / lobar bronchus
TRACK_GROWTH = 2.5              # an airway section is at most this x the sections it continues


@dataclass
class Airways:
    """What :func:`find_airways` found (masks bool (z, y, x) on the CT grid)."""

    lumen: np.ndarray                 # trachea, main (and lobar) bronchi
    trachea: np.ndarray               # the trachea's lumen alone, down to the carina
    #: (its core, for the air level, is taken where it is a clean tube of lumen sections)
    carina: int | None = None         # slice index of the carina (with bronchi; else where the trachea's tube ends)
    air_hu: float | None = None       # median HU of the trachea's core
    noise_hu: float | None = None     # robust SD (HU) of the trachea's core
    core: np.ndarray | None = None    # the core's voxels (bool), for calibration
    notes: list = field(default_factory=list)


def find_airways(hu, spacing, direction=None, padding=None, within=None, voxel_ml=None,
                 bronchi: bool = True) -> Airways:
    """The airways of a (z, y, x) HU volume (see the module's steps).

    Args:
        spacing: (x, y, z) mm; direction: ITK's 9 numbers (LPS; identity when None).
        padding: bool (z, y, x) outside the reconstructed field of view, or None.
        within: bool (z, y, x) lung candidates (enclosed air) for 3D region growing, or None
            (then the trachea and the bronchi traced slice by slice only).
        bronchi: False for the trachea alone (quality control's air reference).
    """
    D = np.asarray(direction if direction is not None else np.eye(3).ravel(), float).reshape(3, 3)
    empty = np.zeros(hu.shape, bool)
    if hu.shape[0] < 3:
        return Airways(empty, empty.copy(), notes=["too few slices to follow the trachea"])
    down = -1 if D[2, 2] >= 0 else 1
    found = find_trachea(hu, spacing, down, padding)
    if found is None:
        return Airways(empty, empty.copy(), notes=["no trachea found"])
    trachea, smooth, sections, box = found
    core = _core(trachea, spacing)
    values = hu[core].astype(np.float64)
    air = float(np.median(values)) if values.size >= 50 else float(np.median(hu[trachea]))
    noise = _robust_sd(values) if values.size >= 50 else 35.0
    out = Airways(lumen=trachea.copy(), trachea=trachea, air_hu=round(air, 1),
                  noise_hu=None if values.size < 50 else round(_robust_sd(values), 1), core=core)
    ks = np.flatnonzero(trachea.any(axis=(1, 2)))
    out.carina = int(ks[0] if down < 0 else ks[-1])
    if not bronchi:
        return out
    tracked = _track(smooth, sections, out.carina, trachea[out.carina][box], spacing, down, air)
    out.lumen[:, box[0], box[1]] |= tracked
    end, out.carina = out.carina, _carina(tracked, out.carina, down, spacing)
    for k in range(end + down, out.carina, down):  # the trachea traced on below its tube, to the carina
        out.trachea[k] = out.lumen[k]
    if within is not None and within.any():
        voxel_ml = voxel_ml or float(np.prod(spacing)) / 1000.0
        grown = _grow(hu, within, out.lumen, spacing, air, noise, voxel_ml)
        if grown is None:
            out.notes.append("3D airway growing leaked into the lung; airways traced slice by slice "
                             "(trachea and main bronchi)")
        else:
            out.lumen |= grown
    return out


def find_trachea(hu, spacing, down, padding=None):
    """(trachea lumen bool (z, y, x), smoothed slices {k: float32}, lumen labels {k: int},
    box) or None: the longest tube of trachea-sized lumen sections (module step 1). The slices'
    arrays cover ``box`` (y, x slices), the part of the image around the body's middle where a
    trachea section may lie. ``down`` is the index step toward the feet."""
    pixel = spacing[0] * spacing[1]
    sigma = (SMOOTH_MM / spacing[1], SMOOTH_MM / spacing[0])
    lo, hi = TRACHEA_AREA_MM2
    frames = _body_frames(hu, padding)
    if not frames:
        return None
    box = _search_box(frames, hu.shape[1:])
    y0, x0 = box[0].start, box[1].start
    smooth = _Smoothed(hu, box, sigma)
    labels, areas, ok = {}, {}, {}
    for k in range(hu.shape[0]):
        lumen = smooth.make(k) < LUMEN_HU  # kept only where the bronchi are traced (memory)
        if padding is not None:
            lumen &= ~padding[k][box]
        lab, n = ndimage.label(lumen)
        labels[k] = lab
        area = np.bincount(lab.ravel(), minlength=n + 1) * pixel
        good = (area >= lo) & (area <= hi)
        good[np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))] = False
        good[0] = False
        if k not in frames:
            good[:] = False
        elif good.any():
            cy, cx, height, width = frames[k]
            y, x = _centres(lab, n)
            good &= (np.abs(x + x0 - cx) <= MIDDLE_X_SHARE * width) & (np.abs(y + y0 - cy) <= MIDDLE_Y_SHARE * height)
        areas[k], ok[k] = area, good
    nxt = {}  # (k, label) -> label on the slice below that continues it as a tube
    for k in range(hu.shape[0]):
        j = k + down
        if not 0 <= j < hu.shape[0] or not ok[k].any():
            continue
        a, b = labels[k], labels[j]
        both = (a > 0) & (b > 0)
        base = int(b.max()) + 1
        pairs = np.unique(a[both].astype(np.int64) * base + b[both])
        la, lb = pairs // base, pairs % base
        counts = np.bincount(la, minlength=len(areas[k]))
        for x, y in zip(la, lb):
            if ok[k][x] and counts[x] == 1 and ok[j][y] and \
                    areas[j][y] <= TUBE_GROWTH * areas[k][x] and areas[k][x] <= TUBE_GROWTH * areas[j][y]:
                nxt[(k, int(x))] = int(y)
    run = {}
    order = range(hu.shape[0]) if down < 0 else range(hu.shape[0] - 1, -1, -1)  # from the feet up
    for k in order:
        for x in np.flatnonzero(ok[k]):
            y = nxt.get((k, int(x)))
            run[(k, int(x))] = 1 + (run.get((k + down, y), 0) if y is not None else 0)
    if not run:
        return None
    best = max(run.values())
    if (best - 1) * spacing[2] < TRACHEA_MIN_RUN_MM:
        return None
    # the tubes at least 0.9 of the longest come first; among them the one nearest the body's middle
    continued = {(k + down, y) for (k, _), y in nxt.items()}
    tops = [key for key, r in run.items() if r >= 0.6 * best and key not in continued]

    def off_middle(key):
        k, label = key
        return abs(np.nonzero(labels[k] == label)[1].mean() + x0 - frames[k][1])

    tops.sort(key=lambda key: (-(run[key] >= 0.9 * best), off_middle(key)))
    k, x = tops[0]
    trachea = np.zeros(hu.shape, bool)
    while x is not None:
        trachea[k][box] = labels[k] == x
        x = nxt.get((k, x))
        k += down
    return trachea, smooth, labels, box


class _Smoothed(dict):
    """{slice: float32 (y, x)}: ``hu``'s slices on ``box`` smoothed in-plane by ``sigma``
    (pixels), made when first asked for."""

    def __init__(self, hu, box, sigma):
        super().__init__()
        self.hu, self.box, self.sigma = hu, box, sigma

    def make(self, k) -> np.ndarray:
        return ndimage.gaussian_filter(self.hu[k][self.box].astype(np.float32), self.sigma, truncate=3.0)

    def __missing__(self, k):
        self[k] = value = self.make(k)
        return value


def _body_frames(hu, padding) -> dict:
    """{slice: (centre y, centre x, height, width)} in pixels of the body's bounding box (the
    largest object above ``LUMEN_HU`` on a 4-pixel grid), for slices that have one."""
    frames = {}
    for k in range(hu.shape[0]):
        tissue = hu[k, ::4, ::4] >= LUMEN_HU
        if padding is not None:
            tissue &= ~padding[k, ::4, ::4]
        parts, m = ndimage.label(tissue)
        if not m:
            continue
        body = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
        ys, xs = 4 * np.flatnonzero(body.any(axis=1)), 4 * np.flatnonzero(body.any(axis=0))
        frames[k] = ((ys[0] + ys[-1]) / 2.0, (xs[0] + xs[-1]) / 2.0, ys[-1] - ys[0] + 4, xs[-1] - xs[0] + 4)
    return frames


def _search_box(frames, shape) -> tuple:
    """The (y, x) slices that hold every slice's middle of the body with room for the bronchi
    (1.4 times the share a trachea section may lie off the middle)."""
    y0 = min(cy - 1.4 * MIDDLE_Y_SHARE * h for cy, _, h, _ in frames.values())
    y1 = max(cy + 1.4 * MIDDLE_Y_SHARE * h for cy, _, h, _ in frames.values())
    x0 = min(cx - 1.4 * MIDDLE_X_SHARE * w for _, cx, _, w in frames.values())
    x1 = max(cx + 1.4 * MIDDLE_X_SHARE * w for _, cx, _, w in frames.values())
    return (slice(max(int(y0), 0), min(int(np.ceil(y1)) + 1, shape[0])),
            slice(max(int(x0), 0), min(int(np.ceil(x1)) + 1, shape[1])))


def _centres(lab, n) -> tuple:
    """(y, x) centres (pixels, arrays of n + 1) of the labels 0..n."""
    ys, xs = np.nonzero(lab)
    ids = lab[ys, xs]
    count = np.maximum(np.bincount(ids, minlength=n + 1), 1)
    return np.bincount(ids, weights=ys, minlength=n + 1) / count, np.bincount(ids, weights=xs, minlength=n + 1) / count


def _core(trachea, spacing) -> np.ndarray:
    """Lumen voxels at least ``CORE_MM`` (and 2 pixels) from the lumen edge, per slice."""
    core = np.zeros_like(trachea)
    reach = max(CORE_MM, 2.0 * max(spacing[0], spacing[1]))
    for k in np.flatnonzero(trachea.any(axis=(1, 2))):
        ys, xs = np.flatnonzero(trachea[k].any(axis=1)), np.flatnonzero(trachea[k].any(axis=0))
        box = (slice(max(ys[0] - 1, 0), ys[-1] + 2), slice(max(xs[0] - 1, 0), xs[-1] + 2))
        core[k][box] = ndimage.distance_transform_edt(trachea[k][box], sampling=(spacing[1], spacing[0])) >= reach
    return core


def _robust_sd(values) -> float:
    """SD from the median absolute deviation (the core is uniform air)."""
    values = np.asarray(values, np.float64)
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else 0.0


def _track(smooth, labels, carina, section, spacing, down, air) -> np.ndarray:
    """The main (and lobar) bronchi below the trachea's last section ``section`` on slice
    ``carina``, traced slice by slice over the lumen components (``labels``: smoothed HU below
    ``LUMEN_HU``) that overlap the previous airway. A component larger than ``TRACK_GROWTH``
    times the airway sections it continues, or than ``TRACK_MAX_AREA`` times the trachea's
    section, has merged in-plane with air beside it (lung, the oesophagus):
    :func:`_free_section` looks for the airway inside it; tracing ends when none comes free,
    when the sections together exceed twice that bound (lung let in), ``BRONCHI_MM`` below the trachea's end or
    ``MAIN_BRONCHI_MM`` below the carina (on Lung-PET-CT-Dx A0001, dark lung beside the lower
    lobe bronchus passes for lumen 25 mm below it). Arrays cover the search box;
    returns bool (z, y', x') on it."""
    n_slices = len(labels)
    out = np.zeros((n_slices,) + section.shape, bool)
    max_area = TRACK_MAX_AREA * section.sum()
    min_area = max(2, int(np.ceil(TRACK_MIN_SECTION_MM2 / (spacing[0] * spacing[1]))))
    max_erosion = max(1, int(round(TRACK_MAX_EROSION_MM / min(spacing[0], spacing[1]))))
    levels = [air * share for share in TRACK_LUMEN_SHARES]
    current = section
    k = carina + down
    steps = int(round(BRONCHI_MM / spacing[2]))
    below_carina = False
    while 0 <= k < n_slices and current.any() and steps > 0:
        parts = labels[k]
        near = ndimage.binary_dilation(current)
        sections = np.zeros_like(current)
        above, _ = ndimage.label(current)
        above_area = np.bincount(above.ravel())
        for label in np.unique(parts[near & (parts > 0)]):
            part = parts == label
            # a section may grow by TUBE_GROWTH over the airway sections above it; more is air
            # beside it (the oesophagus, lung) joined in-plane: freed like a merged section
            source = above_area[np.unique(above[part & (above > 0)])].sum() if (part & current).any() else 0
            bound = min(max_area, TRACK_GROWTH * source) if source else 0
            if part.sum() <= bound:
                sections |= part
            elif source:
                sections |= _free_section(part, smooth[k], near, bound, min_area, max_erosion, levels)
        if sections.sum() > 2 * max_area:  # more than two bronchi of the trachea's size: lung let in
            break
        current = sections
        out[k] = current
        k += down
        steps -= 1
        if not below_carina and _two_sections(current, min_area):
            below_carina = True  # the carina: the main bronchi are traced MAIN_BRONCHI_MM further
            steps = min(steps, int(round(MAIN_BRONCHI_MM / spacing[2])))
    return out


def _two_sections(mask, min_area) -> bool:
    """``mask`` (one slice) holds at least two sections of ``min_area`` pixels."""
    parts, n = ndimage.label(mask)
    return n >= 2 and (np.bincount(parts.ravel())[1:] >= min_area).sum() >= 2


def _carina(tracked, end, down, spacing) -> int:
    """The carina: the first slice below the trachea's ``end`` where the traced airway is two
    sections of at least ``TRACK_MIN_SECTION_MM2`` (the trachea's end when it never is)."""
    min_area = TRACK_MIN_SECTION_MM2 / (spacing[0] * spacing[1])
    k = end + down
    while 0 <= k < tracked.shape[0] and tracked[k].any():
        if _two_sections(tracked[k], min_area):
            return k
        k += down
    return end


def _free_section(part, smooth, near, max_area, min_area, max_erosion, levels) -> np.ndarray:
    """The airway section inside ``part`` (one slice's lumen component merged with lung): the
    lumen is darker than its partial-volume wall and joined to the lung by a thin bridge, so
    ``part`` is re-thresholded at ``levels`` (HU, relative to the air) and, failing that,
    eroded in-plane (up to ``max_erosion`` steps), until every piece overlapping ``near``
    (the previous airway, dilated) is at most ``TRACK_FREED_SHARE`` of ``max_area``; those
    pieces grown back inside the level's mask are the section when they hold ``min_area``
    pixels, else it is empty (the branch entered the lung)."""
    for steps in range(0, max_erosion + 1):
        for level in levels:
            mask = part & (smooth < level)
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


def _grow(hu, within, seeds, spacing, air, noise, voxel_ml):
    """Region growing inside ``within`` from the ``seeds`` (trachea and traced bronchi) over the
    smoothed volume below air-relative levels (``GROW_ABOVE_AIR_HU``, lowered step by step
    while the grown volume exceeds ``AIRWAY_MAX_ML``); the smoothing widens with the noise
    measured in the trachea. None when every level leaks; empty when no seed lies ``within``."""
    inside = seeds & within
    if not inside.any():  # the airways found lie outside the lungs: nothing to grow
        return np.zeros(hu.shape, bool)
    zs, ys, xs = (np.flatnonzero(within.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    box = (slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    scale = 0.7 * max(1.0, noise / 35.0)
    sigma = np.array([1.0 / spacing[2], 1.0 / spacing[1], 1.0 / spacing[0]]) * scale
    smooth = ndimage.gaussian_filter(hu[box].astype(np.float32), sigma)
    cand, seed = within[box], inside[box]
    first, last = GROW_ABOVE_AIR_HU
    for level in np.arange(first, last - 1e-6, -15.0):
        parts, _ = ndimage.label(cand & (smooth < air + level))
        hit = np.unique(parts[seed & (parts > 0)])
        if not hit.size:
            continue
        grown = np.isin(parts, hit)
        if grown.sum() * voxel_ml <= AIRWAY_MAX_ML:
            out = np.zeros(hu.shape, bool)
            out[box] = grown
            return out
    return None


def exclude_airways(labels, lumen, spacing, rim_mm=3.0, wall_mm=2.0) -> np.ndarray:
    """``labels`` (uint8 (z, y, x)) without the airway ``lumen``, its partial-volume rim (lung-
    labelled voxels within ``rim_mm`` of it, in-plane) and wall (``wall_mm``): what an engine
    whose labels hold the trachea or main bronchi does with :func:`find_airways`' lumen."""
    out = labels.copy()
    if not lumen.any():
        return out
    zs, ys, xs = (np.flatnonzero(lumen.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    pad = [1] + [int(round((rim_mm + wall_mm) / s)) + 1 for s in (spacing[1], spacing[0])]
    box = (slice(max(zs[0] - pad[0], 0), zs[-1] + pad[0] + 1), slice(max(ys[0] - pad[1], 0), ys[-1] + pad[1] + 1),
           slice(max(xs[0] - pad[2], 0), xs[-1] + pad[2] + 1))
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = True
    rim = max(1, int(round(rim_mm / min(spacing[0], spacing[1]))))
    wall = max(1, int(round(wall_mm / min(spacing[0], spacing[1]))))
    grown = ndimage.binary_dilation(lumen[box], plane, iterations=rim, mask=labels[box] > 0) | lumen[box]
    grown = ndimage.binary_dilation(grown, plane, iterations=wall)
    out[box][grown] = 0
    return out
