"""Classical lung segmentation (no weights): threshold, airways, right / left split, filling.

Steps, on the full-resolution (z, y, x) grid:
1. Air: voxels below ``LUNG_AIR_HU`` (padding excluded); the enclosed air inside the body that
   looks like lung is the lung candidates (:func:`.lung_air.enclosed_lung_air`).
2. Airways: the trachea and the main and lobar bronchi from the one airway finder
   (:func:`.airways.find_airways`, with the candidates for its region growing). The airway
   lumen, dilated by a wall band, is removed from the lungs and returned as ``airways`` for
   display.
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

from .airways import find_airways
from .lung_air import LUNG_AIR_HU, enclosed_lung_air

OUTSIDE_FOV_BELOW_HU = -1500.0  # voxels below this are padding or outside the field of view
AIRWAY_WALL_MM = 2.0
AIRWAY_RIM_MM = 3.0
MIN_PART_FRACTION = 0.005       # lung pieces smaller than this share of the lungs are dropped
CLOSING_MM = 5.0


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
    candidates = enclosed_lung_air(hu, air, padding, voxel_ml, spacing)
    if not candidates.any():
        warnings.append("no enclosed lung-density air found: no lung segmented")
        return ClassicalResult(np.zeros(hu.shape, np.uint8), np.zeros(hu.shape, bool), warnings)

    # everything after this works inside the candidates' bounding box (a third of the volume)
    margin = [int(round(2 * CLOSING_MM / s)) + 1 for s in (spacing[2], spacing[1], spacing[0])]
    box = _bounding_box(candidates, margin)
    found = find_airways(hu, spacing, direction, padding=padding, within=candidates, voxel_ml=voxel_ml)
    warnings.extend(note for note in found.notes if "leaked" in note)
    airways_box = found.lumen[box]
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
    airways = found.lumen  # the trachea up the neck too, outside the lungs' box
    airways[box] |= airways_box
    return ClassicalResult(labels, airways, warnings)


def _bounding_box(mask, margin) -> tuple:
    """Slices of the (z, y, x) bounding box of ``mask`` grown by ``margin`` voxels per axis."""
    box = []
    for axis, pad in enumerate(margin):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(idx[0] - pad, 0), min(idx[-1] + pad + 1, mask.shape[axis])))
    return tuple(box)


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
