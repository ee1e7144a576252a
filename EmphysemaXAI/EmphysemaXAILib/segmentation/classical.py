"""Classical lung segmentation (no weights): threshold, airways, right / left split, filling.

Steps, on the full-resolution (z, y, x) grid:
1. Air: voxels below ``LUNG_AIR_HU`` (padding excluded). Air connected to the in-plane image
   border is outside the body; the enclosed air components that lie inside the body's hull
   (:func:`_body_hull`: not the air in or above the patient table) and hold lung-density voxels
   (or are large) are the lung candidates (stomach and bowel gas are pure air and small); a
   lung cut by the field of view is kept (:func:`_cut_by_border`). On one or two slices only
   lung-density components count and midline airway sections (the trachea) are dropped.
2. Airways: the trachea is the trachea-sized section at the top that runs furthest down as a
   tube (:func:`_find_trachea`); region growing from it over voxels below an airway threshold,
   lowered step by step while the grown volume exceeds what a trachea with main and lobar
   bronchi can hold (a leak into emphysematous lung); after a leak, slice-by-slice tracking of
   the trachea and bronchi (:func:`_track_airways`). The airway lumen, dilated by a wall band,
   is removed from the lungs and returned as ``airways`` for display.
3. Right / left: 3D components after airway removal; where the lungs still touch (anterior or
   posterior junction), the touching slices are split by 2D erosion and nearest-part
   assignment. In LPS, the right lung lies at lower x.
4. Holes: each lung is filled slice by slice (intrapulmonary vessels belong to the lung) and
   closed in-plane (hilar vessels at the medial surface), without taking the other lung's or
   the airways' voxels.
All thresholds are in HU and sizes in mm, so the rules hold from a 4 mm 64 x 64 volume to a
0.7 mm 512 x 512 x 400 one, and on a single slice.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..volume import IN_PLANE

LUNG_AIR_HU = -400.0            # lung / soft-tissue boundary (midway between -860 and 40)
PARENCHYMA_HU = (-960.0, -500.0)  # what lung looks like (pure air -1000 is gas or airway)
MIN_LUNG_ML = 2.0
AIRWAY_START_HU = -950.0
AIRWAY_MIN_HU = -1010.0
AIRWAY_MAX_ML = 200.0           # trachea + main + lobar bronchi hold well under this
TRACHEA_AREA_MM2 = (40.0, 800.0)
AIRWAY_WALL_MM = 2.0
AIRWAY_RIM_MM = 3.0
TRACHEA_MIN_RUN_MM = 15.0      # the trachea runs at least this far as a tube below its seed
TRACK_MAX_AREA = 2.0           # a section above this x the trachea's has merged with lung
TRACK_FREED_SHARE = 0.75       # a freed piece is at most this share of a free section's bound
TRACK_MAX_EROSION_MM = 4.0     # in-plane erosion that may free an airway touching the lung
TRACK_LUMEN_HU = (-400.0, -600.0, -800.0)  # lumen levels tried inside a merged section
TRACK_MIN_SECTION_MM2 = 20.0   # a freed section smaller than this is not a main / lobar bronchus
MIN_PART_FRACTION = 0.005       # lung pieces smaller than this share of the lungs are dropped
CLOSING_MM = 5.0
OUTSIDE_FOV_BELOW_HU = -1500.0  # voxels below this are padding or outside the field of view
CUT_LUNG_INSIDE = 0.9          # share of a border-cut lung inside the convex hull of the body
BODY_TISSUE_SHARE = 0.8        # the body hull holds at least this share of a slice's tissue
BODY_PART_SHARE = 0.02         # opened tissue parts of at least this share of the largest are body
BODY_GRID_MM = 2.0             # pixel size of the body hull's grid
TABLE_OPENING_MM = 6.0         # in-plane opening that removes table and blanket shells from the body
BODY_SHARE = 0.5               # share of an enclosed air component inside the body for it to be lung
MIDLINE_SHARE = 0.05           # a midline airway section lies within this share of the body width


@dataclass
class ClassicalResult:
    labels: np.ndarray                 # uint8 (z, y, x): 0 background, 1 right, 2 left
    airways: np.ndarray                # bool (z, y, x): airway lumen found
    warnings: list = field(default_factory=list)


def segment_classical(hu: np.ndarray, spacing, direction=None, padding_hu=None) -> ClassicalResult:
    """Segment the lungs of a (z, y, x) HU volume with ``spacing`` (x, y, z) mm.

    ``direction`` (ITK, 9 numbers, LPS) decides which index end is the head and which x side is
    the patient's right; the default is the identity (axial, x to the left, z to the head).
    """
    D = np.asarray(direction if direction is not None else np.eye(3).ravel(), float).reshape(3, 3)
    warnings = []
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # padding / outside the reconstruction: neither air nor tissue (a scanner's padding value,
    # or the reader's OUTSIDE_FOV_HU around a tilt-corrected or resampled volume)
    padding = hu <= OUTSIDE_FOV_BELOW_HU
    if padding_hu is not None and padding_hu < -1024:
        padding |= hu == padding_hu
    air = (hu < LUNG_AIR_HU) & ~padding
    candidates = _enclosed_lung_air(hu, air, padding, voxel_ml, spacing)
    if not candidates.any():
        warnings.append("no enclosed lung-density air found: no lung segmented")
        return ClassicalResult(np.zeros(hu.shape, np.uint8), np.zeros(hu.shape, bool), warnings)

    # everything after this works inside the candidates' bounding box (a third of the volume)
    margin = [int(round(2 * CLOSING_MM / s)) + 1 for s in (spacing[2], spacing[1], spacing[0])]
    box = _bounding_box(candidates, margin)
    airways_box = _grow_airways(hu[box], candidates[box], spacing, D, voxel_ml, warnings)
    if airways_box.any():
        # the lumen's partial-volume rim (blurred by soft kernels) is air too: take it along
        rim = max(1, int(round(AIRWAY_RIM_MM / min(spacing))))
        airways_box = ndimage.binary_dilation(airways_box, iterations=rim, mask=candidates[box])
    wall = _dilate_mm(airways_box, AIRWAY_WALL_MM, spacing) if airways_box.any() else airways_box
    lungs = candidates[box] & ~wall
    del candidates
    labels_box = _split_right_left(lungs, spacing, D, voxel_ml, warnings)
    labels_box = _fill_and_close(labels_box, spacing)
    labels_box[wall] = 0
    labels = np.zeros(hu.shape, np.uint8)
    labels[box] = labels_box
    airways = np.zeros(hu.shape, bool)
    airways[box] = airways_box
    return ClassicalResult(labels, airways, warnings)


def _bounding_box(mask, margin) -> tuple:
    """Slices of the (z, y, x) bounding box of ``mask`` grown by ``margin`` voxels per axis."""
    box = []
    for axis, pad in enumerate(margin):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(idx[0] - pad, 0), min(idx[-1] + pad + 1, mask.shape[axis])))
    return tuple(box)


def _enclosed_lung_air(hu, air, padding, voxel_ml, spacing) -> np.ndarray:
    """Air components that look like lung: not outside air (touching an in-plane image edge,
    or padding on most of their slices: :func:`_along_padding`), and lungs cut by the field of
    view (:func:`_cut_by_border`)."""
    components, count = ndimage.label(air)
    if count == 0:
        return np.zeros(hu.shape, bool)
    edges = (components[:, 0, :], components[:, -1, :], components[:, :, 0], components[:, :, -1])
    touched = np.zeros((4, count + 1), bool)  # which of the four in-plane image edges each touches
    for e, edge in enumerate(edges):
        touched[e, np.unique(edge)] = True
    border = touched.any(axis=0) | _along_padding(components, count, air, padding)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    lo, hi = PARENCHYMA_HU
    dense = np.bincount(components[(hu > lo) & (hu < hi)], minlength=count + 1)
    keep = np.zeros(count + 1, bool)
    body = _body_hull(hu, padding, spacing, np.flatnonzero(air.any(axis=(1, 2))))
    in_body = np.bincount(components[body], minlength=count + 1)
    cut = _cut_by_border(components, touched, sizes, dense, in_body, voxel_ml)
    inside = (~border & (in_body >= BODY_SHARE * sizes)) | cut
    inside[0] = False
    if not inside.any():
        return np.zeros(hu.shape, bool)
    largest = sizes[inside].max()
    lung_density = dense / np.maximum(sizes, 1) >= 0.3
    if hu.shape[0] < 3:
        # one or two slices: a lung section can be small in ml, and a gas pocket (stomach,
        # bowel) can be the largest enclosed air: keep lung-density components of at least 2%
        # of the largest; the trachea and main bronchi, which no 3D airway tracking can follow
        # here, are the sections of airway size on the body's midline
        keep[inside & lung_density & (sizes >= 0.02 * largest)] = True
        keep &= ~_midline_airways(components, count, sizes, body, spacing)
    else:
        lungish = lung_density | (sizes >= 0.3 * largest)
        keep[inside & lungish & (sizes * voxel_ml >= MIN_LUNG_ML)] = True
    return keep[components]


def _midline_airways(components, count, sizes, body, spacing) -> np.ndarray:
    """Air components (bool per label) shaped like a trachea or main bronchus section on one or
    two slices: an area per slice within ``TRACHEA_AREA_MM2`` and a centre within
    ``MIDLINE_SHARE`` of the body's width from the body's midline (lungs lie to either side)."""
    out = np.zeros(count + 1, bool)
    xs = np.nonzero(body)[2]
    if not xs.size:
        return out
    mid, width = (xs.min() + xs.max()) / 2.0, xs.max() - xs.min() + 1
    n_slices = max(components.shape[0], 1)
    x = np.broadcast_to(np.arange(components.shape[2], dtype=np.float64), components.shape)
    centre = np.bincount(components.ravel(), weights=x.ravel(), minlength=count + 1) / np.maximum(sizes, 1)
    area_mm2 = sizes / n_slices * spacing[0] * spacing[1]
    lo, hi = TRACHEA_AREA_MM2
    out[1:] = ((area_mm2 >= lo) & (area_mm2 <= hi) & (np.abs(centre - mid) <= MIDLINE_SHARE * width))[1:]
    return out


def _body_hull(hu, padding, spacing, slices) -> np.ndarray:
    """The body on each axial slice in ``slices``: bool (z, y, x), the convex hull of the
    tissue (HU >= ``LUNG_AIR_HU``, padding excluded) after an in-plane opening by
    ``TABLE_OPENING_MM``, which removes the thin shells of the patient table and of blankets:
    the air inside the table or in the gap between the back and a table touching it then lies
    outside the body (on one or two slices it is enclosed in-plane, and 3D connectivity cannot
    tell). The opening may break a thin chest wall into pieces, which are gathered
    (:func:`_body_parts`); when the hull still leaves out more than ``1 - BODY_TISSUE_SHARE``
    of the slice's tissue the opening took the body wall itself (a thin patient, or an image
    whose spacing is wrong), and smaller openings are tried, down to none. Computed on a grid of
    about ``BODY_GRID_MM`` pixels (square openings there; the hull only decides where air lies).
    """
    step = [max(1, int(BODY_GRID_MM // s)) for s in (spacing[1], spacing[0])]
    radius = [max(1, int(round(TABLE_OPENING_MM / (s * f)))) for s, f in zip((spacing[1], spacing[0]), step)]
    slices = np.asarray(slices, int)
    body = np.zeros(hu.shape, bool)
    if not slices.size:
        return body
    tissue = (hu[slices, ::step[0], ::step[1]] >= LUNG_AIR_HU) & ~padding[slices, ::step[0], ::step[1]]
    rows = np.minimum(np.arange(hu.shape[1]) // step[0], tissue.shape[1] - 1)
    cols = np.minimum(np.arange(hu.shape[2]) // step[1], tissue.shape[2] - 1)
    pending = np.arange(len(slices))
    for fraction in (1.0, 0.5, 0.0):
        size = [1] + [1 + 2 * int(round(r * fraction)) for r in radius]
        opened = ndimage.maximum_filter(ndimage.minimum_filter(tissue[pending].view(np.uint8), size=size),
                                        size=size).view(bool)
        retry = []
        for index, plane in zip(pending, opened):
            parts, n = ndimage.label(plane)
            if n == 0:
                continue
            hull = _filled_hull(_body_parts(parts, n))
            if fraction and (hull & tissue[index]).sum() < BODY_TISSUE_SHARE * tissue[index].sum():
                retry.append(index)
                continue
            body[slices[index]] = hull[np.ix_(rows, cols)]
        pending = np.asarray(retry, int)
        if not pending.size:
            break
    return body


def _body_parts(parts, n) -> np.ndarray:
    """The body among one slice's opened tissue parts (labels 1..``n``): every part of at least
    ``BODY_PART_SHARE`` of the largest (an opening may break a thin chest wall into pieces, and
    the lungs keep the mediastinum apart from the chest wall)."""
    areas = np.bincount(parts.ravel(), minlength=n + 1)
    areas[0] = 0
    keep = areas >= BODY_PART_SHARE * areas.max()
    keep[0] = False
    return keep[parts]


def _filled_hull(mask) -> np.ndarray:
    """The filled convex hull of a 2D bool mask (Qhull on its pixel centres, Pillow's polygon
    fill, which includes the outline)."""
    from PIL import Image, ImageDraw
    from scipy.spatial import ConvexHull, QhullError

    points = np.argwhere(mask)
    try:
        corners = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # fewer than 3 points, or all on a line
        return mask.copy()
    image = Image.new("1", (mask.shape[1], mask.shape[0]), 0)
    ImageDraw.Draw(image).polygon([(int(x), int(y)) for y, x in corners], fill=1, outline=1)
    return np.asarray(image, dtype=bool) | mask


def _along_padding(components, count, air, padding) -> np.ndarray:
    """Air components (bool per label) that touch padding in-plane on at least half of the
    slices they span: outside air within a circular reconstruction field of view (padding all
    around it on every slice), not an airway that merely ends where a resampled or
    tilt-corrected volume has padding wedges above the scan (a few slices)."""
    out = np.zeros(count + 1, bool)
    if not padding.any():
        return out
    contact = ndimage.binary_dilation(padding, structure=IN_PLANE) & air
    labels, slices = components[contact], np.nonzero(contact)[0]
    pairs = np.unique(labels.astype(np.int64) * components.shape[0] + slices)
    touching_slices = np.bincount(pairs // components.shape[0], minlength=count + 1)
    spanned = np.zeros(count + 1, np.int64)
    for label, box in enumerate(ndimage.find_objects(components), start=1):
        if box is not None:
            spanned[label] = box[0].stop - box[0].start
    out[1:] = touching_slices[1:] >= 0.5 * np.maximum(spanned[1:], 1)
    out[1:] &= touching_slices[1:] > 0
    return out


def _cut_by_border(components, touched, sizes, dense, in_body, voxel_ml) -> np.ndarray:
    """Border-touching air components that are lung cut by the field of view (bool per label).

    Outside air reaches the image edges around the body; a lung cut by a crop (Slicer's Crop
    Volume, a narrow reconstruction) touches an edge too, and would otherwise be dropped with
    the outside air (and with it the other lung, joined through the airways). A border
    component is taken as cut lung when it touches a single edge, holds at least
    ``MIN_LUNG_ML``, is mostly lung density (``PARENCHYMA_HU``) and lies inside the body: at
    least ``CUT_LUNG_INSIDE`` of its voxels (``in_body``, per label) are within the body's
    hull (:func:`_body_hull`), where outside air and the air in the patient table are not.
    Geometry, not density, decides: outside air reads -910 HU on some scanners and partial
    volume makes it lung-dense on coarse grids.
    """
    count = len(sizes) - 1
    cut = np.zeros(count + 1, bool)
    candidates = np.flatnonzero((touched.sum(axis=0) == 1) & (dense >= 0.5 * sizes)
                                & (sizes * voxel_ml >= MIN_LUNG_ML))
    candidates = candidates[candidates > 0]
    cut[candidates] = in_body[candidates] >= CUT_LUNG_INSIDE * sizes[candidates]
    return cut


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


def _grow_airways(hu, candidates, spacing, D, voxel_ml, warnings) -> np.ndarray:
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


def _dilate_mm(mask, mm, spacing) -> np.ndarray:
    """Dilation by a box of +-``mm``, at least one voxel in-plane (on coarse grids the voxel
    beside the lumen is mostly wall); computed on the mask's bounding box only."""
    reach = [int(round(mm / spacing[2]))] + [max(1, int(round(mm / s))) for s in (spacing[1], spacing[0])]
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    box = _bounding_box(mask, reach)
    size = [1 + 2 * r for r in reach]
    out[box] = ndimage.maximum_filter(mask[box].view(np.uint8), size=size).view(bool)
    return out


def _split_right_left(lungs, spacing, D, voxel_ml, warnings) -> np.ndarray:
    """Label the right (1) and left (2) lung.

    Two large 3D components are the two lungs. Otherwise the lungs touch (anterior or posterior
    junction, or airways left in the mask): the mask is eroded on a coarse grid (about 2 mm)
    until it falls into two large parts, and every lung voxel goes to the nearer part.
    """
    labels = np.zeros(lungs.shape, np.uint8)
    parts, count = ndimage.label(lungs)
    if count == 0:
        return labels
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    specks = sizes < MIN_PART_FRACTION * sizes.sum()  # airway rims, gas bubbles: not lung
    specks[0] = False
    if specks.any():
        lungs = lungs & ~specks[parts]
        parts[~lungs] = 0
        sizes[specks] = 0
    order = np.argsort(sizes)[::-1]
    right_is_low_x = D[0, 0] >= 0  # LPS: x grows toward the patient's left
    if count >= 2 and sizes[order[1]] >= 0.1 * sizes.sum():
        # the two largest parts are the lungs; smaller pieces join the one nearer along x
        inside = parts > 0
        ids = parts[inside]
        x = np.broadcast_to(np.arange(parts.shape[2], dtype=np.float32), parts.shape)[inside]
        centre_x = np.bincount(ids, weights=x, minlength=count + 1)[1:] / np.maximum(sizes[1:], 1)
        main_x = centre_x[order[:2] - 1]
        low_x, high_x = float(main_x.min()), float(main_x.max())
        is_low = np.abs(centre_x - low_x) < np.abs(centre_x - high_x)
        lut = np.zeros(count + 1, np.uint8)
        lut[1:] = np.where(is_low == right_is_low_x, 1, 2)
        lut[1:][specks[1:]] = 0
        return lut[parts]
    owner = _split_by_erosion(lungs, spacing)
    if owner is None:
        warnings.append("the lungs could not be separated: each voxel labelled by its side of "
                        "the lungs' middle")
        xs = np.flatnonzero(lungs.any(axis=(0, 1)))
        x_mid = (xs[0] + xs[-1]) / 2.0
        low_side = (np.arange(lungs.shape[2]) < x_mid)[None, None, :]
        labels[lungs & low_side] = 1 if right_is_low_x else 2
        labels[lungs & ~low_side] = 2 if right_is_low_x else 1
        return labels
    labels[lungs] = np.where(owner[lungs] == 1, 1 if right_is_low_x else 2, 2 if right_is_low_x else 1)
    return labels


def _split_by_erosion(lungs, spacing):
    """(z, y, x) int8 map: 1 for the part at lower x, 2 for the other; None when no split."""
    step = [max(1, int(round(2.0 / s))) for s in (spacing[2], spacing[1], spacing[0])]
    coarse = lungs[::step[0], ::step[1], ::step[2]]
    eroded = coarse
    structure = ndimage.generate_binary_structure(3, 1)
    max_iter = int(round(25.0 / min(s * f for s, f in zip((spacing[2], spacing[1], spacing[0]), step))))
    seeds = None
    for _ in range(max(max_iter, 1)):
        eroded = ndimage.binary_erosion(eroded, structure)
        parts, count = ndimage.label(eroded)
        if count < 2:
            if count == 0:
                return None
            continue
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        big = np.argsort(sizes)[::-1][:2]
        if sizes[big[1]] >= 0.15 * sizes[big[0]]:
            xs = [ndimage.center_of_mass(parts == b)[2] for b in big]
            seeds = np.zeros(parts.shape, np.int8)
            seeds[parts == big[int(np.argmin(xs))]] = 1
            seeds[parts == big[int(np.argmax(xs))]] = 2
            break
    if seeds is None:
        return None
    _, index = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    owner_coarse = seeds[tuple(index)]
    zz = np.minimum(np.arange(lungs.shape[0]) // step[0], owner_coarse.shape[0] - 1)
    yy = np.minimum(np.arange(lungs.shape[1]) // step[1], owner_coarse.shape[1] - 1)
    xx = np.minimum(np.arange(lungs.shape[2]) // step[2], owner_coarse.shape[2] - 1)
    return owner_coarse[np.ix_(zz, yy, xx)]


def _fill_and_close(labels, spacing) -> np.ndarray:
    """Fill holes slice by slice and close in-plane, per lung, without crossing into the other."""
    out = labels.copy()
    size = [1, 1 + 2 * int(round(CLOSING_MM / spacing[1])), 1 + 2 * int(round(CLOSING_MM / spacing[0]))]
    taken = labels > 0
    for code in (1, 2):
        mask = labels == code
        if not mask.any():
            continue
        zs = np.flatnonzero(mask.any(axis=(1, 2)))
        ys = np.flatnonzero(mask.any(axis=(0, 2)))
        xs = np.flatnonzero(mask.any(axis=(0, 1)))
        pad_y, pad_x = size[1], size[2]
        box = (slice(zs[0], zs[-1] + 1), slice(max(ys[0] - pad_y, 0), ys[-1] + pad_y + 1),
               slice(max(xs[0] - pad_x, 0), xs[-1] + pad_x + 1))
        sub = mask[box].view(np.uint8)
        closed = ndimage.minimum_filter(ndimage.maximum_filter(sub, size=size), size=size).view(bool)
        closed |= mask[box]
        for k in range(closed.shape[0]):
            closed[k] = ndimage.binary_fill_holes(closed[k])
        other = taken[box] & ~mask[box]
        region = out[box]
        region[closed & ~other] = code
    return out
