"""Classical lung segmentation (no weights): threshold, airways, right / left split, filling.

Steps, on the full-resolution (z, y, x) grid:
1. Air: voxels below ``LUNG_AIR_HU`` (padding included). Air connected to the in-plane image
   border is outside the body; the enclosed air components that hold lung-density voxels
   (or are large) are the lung candidates (stomach and bowel gas are pure air and small).
2. Airways: region growing from the trachea (found as a small round air component near the
   midline on the uppermost slices) over voxels below an airway threshold; the threshold is
   lowered step by step while the grown volume exceeds what a trachea with main and lobar
   bronchi can hold (a leak into emphysematous lung). The airway lumen, dilated by a wall
   thickness, is removed from the lungs; growth stops at lobar level by a volume budget.
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
MIN_PART_FRACTION = 0.005       # lung pieces smaller than this share of the lungs are dropped
CLOSING_MM = 5.0
OUTSIDE_FOV_BELOW_HU = -1500.0  # voxels below this are padding or outside the field of view
CUT_LUNG_INSIDE = 0.9          # share of a border-cut lung inside the convex hull of the body


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
    candidates = _enclosed_lung_air(hu, air, padding, voxel_ml, warnings)
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


def _enclosed_lung_air(hu, air, padding, voxel_ml, warnings=None) -> np.ndarray:
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
    cut = _cut_by_border(hu, components, touched, sizes, dense, voxel_ml)
    if cut.any() and warnings is not None:
        warnings.append("a lung touches the edge of the image: the field of view cuts it, so its volume and "
                        "zone values cover only the part inside the image")
    inside = ~border | cut
    inside[0] = False
    if not inside.any():
        return np.zeros(hu.shape, bool)
    largest = sizes[inside].max()
    lungish = (dense / np.maximum(sizes, 1) >= 0.3) | (sizes >= 0.3 * largest)
    keep[inside & lungish & (sizes * voxel_ml >= MIN_LUNG_ML)] = True
    # on one or two slices, a lung section can be small in ml: keep lung-density components
    # of at least 2% of the largest
    if hu.shape[0] < 3:
        keep[inside & lungish & (sizes >= 0.02 * largest)] = True
    return keep[components]


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


def _cut_by_border(hu, components, touched, sizes, dense, voxel_ml) -> np.ndarray:
    """Border-touching air components that are lung cut by the field of view (bool per label).

    Outside air reaches the image edges around the body; a lung cut by a crop (Slicer's Crop
    Volume, a narrow reconstruction) touches an edge too, and would otherwise be dropped with
    the outside air (and with it the other lung, joined through the airways). A border
    component is taken as cut lung when it touches a single edge, holds at least
    ``MIN_LUNG_ML``, is mostly lung density (``PARENCHYMA_HU``) and lies inside the body: at
    least ``CUT_LUNG_INSIDE`` of its voxels are within the convex hull of the slice's tissue
    (HU >= ``LUNG_AIR_HU``), where outside air is not. Geometry, not density, decides: outside
    air reads -910 HU on some scanners and partial volume makes it lung-dense on coarse grids.
    """
    from skimage.morphology import convex_hull_image

    count = len(sizes) - 1
    cut = np.zeros(count + 1, bool)
    candidates = np.flatnonzero((touched.sum(axis=0) == 1) & (dense >= 0.5 * sizes)
                                & (sizes * voxel_ml >= MIN_LUNG_ML))
    candidates = candidates[candidates > 0]
    if not candidates.size:
        return cut
    tissue = hu >= LUNG_AIR_HU
    chosen = np.isin(components, candidates)
    inside = np.zeros(count + 1, np.int64)
    for k in np.flatnonzero(chosen.any(axis=(1, 2))):
        if tissue[k].sum() < 3:
            continue
        hull = convex_hull_image(tissue[k])
        labels_here = components[k][chosen[k] & hull]
        inside += np.bincount(labels_here, minlength=count + 1)
    cut[candidates] = inside[candidates] >= CUT_LUNG_INSIDE * sizes[candidates]
    return cut


def _superior_order(n: int, D) -> np.ndarray:
    return np.arange(n)[::-1] if D[2, 2] >= 0 else np.arange(n)


def _find_trachea(hu, candidates, spacing, D) -> tuple | None:
    """(z, y, x) seed inside the trachea: small round air near the midline on top slices."""
    pixel_mm2 = spacing[0] * spacing[1]
    lo, hi = TRACHEA_AREA_MM2
    ny, nx = hu.shape[1:]
    lung_slices = np.flatnonzero(candidates.any(axis=(1, 2)))
    if len(lung_slices) < 3:
        return None
    order = [k for k in _superior_order(hu.shape[0], D) if k in set(lung_slices)]
    xs = np.flatnonzero(candidates.any(axis=(0, 1)))
    x_mid = (xs[0] + xs[-1]) / 2.0
    width = xs[-1] - xs[0] + 1
    for k in order[: max(3, len(order) // 4)]:
        lumen = candidates[k] & (hu[k] < AIRWAY_START_HU + 30)
        parts, count = ndimage.label(lumen)
        if count == 0:
            continue
        areas = np.bincount(parts.ravel())[1:] * pixel_mm2
        centers = ndimage.center_of_mass(lumen, parts, np.arange(1, count + 1))
        for (cy, cx), area, label in zip(centers, areas, range(1, count + 1)):
            if lo <= area <= hi and abs(cx - x_mid) < 0.15 * width:
                ys, xs_ = np.nonzero(parts == label)
                return k, int(ys[len(ys) // 2]), int(xs_[len(xs_) // 2])
    return None


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
    """Trace airway cross-sections slice by slice from the trachea seed toward the feet.

    A section continues a branch when it overlaps the previous slice's airway; a section
    larger than twice the trachea (it has merged with low-density lung) ends that branch.
    """
    out = np.zeros(hu.shape, bool)
    k0, y0, x0 = seed
    lumen = candidates[k0] & (hu[k0] < AIRWAY_START_HU + 30)
    parts, _ = ndimage.label(lumen)
    current = parts == parts[y0, x0]
    max_area = 2.0 * current.sum()
    step = -1 if D[2, 2] >= 0 else 1  # toward the feet
    out[k0] = current
    k = k0 + step
    while 0 <= k < hu.shape[0] and current.any():
        lumen = candidates[k] & (hu[k] < AIRWAY_START_HU + 30)
        parts, count = ndimage.label(lumen)
        hit = np.unique(parts[ndimage.binary_dilation(current) & (parts > 0)])
        if not len(hit):
            break
        areas = np.bincount(parts.ravel(), minlength=count + 1)
        keep = [h for h in hit if areas[h] <= max_area]
        current = np.isin(parts, keep) if keep else np.zeros_like(current)
        out[k] = current
        k += step
    return out


def _dilate_mm(mask, mm, spacing) -> np.ndarray:
    """Dilation by a box of +-``mm`` (computed on the mask's bounding box only)."""
    reach = [int(round(mm / s)) for s in (spacing[2], spacing[1], spacing[0])]
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
