"""Lung candidates of the classical engine: the enclosed air inside the body that looks like lung.

Air is voxels below :data:`LUNG_AIR_HU` (padding excluded). Air connected to the in-plane image
border is outside the body; the enclosed air components that lie inside the body's hull
(:func:`_body_hull`: not the air in or above the patient table) and hold lung-density voxels
(or are large) are the lung candidates (stomach and bowel gas are pure air and small); a lung
cut by the field of view is kept (:func:`_cut_by_border`). On one or two slices only
lung-density components count and midline airway sections (the trachea) are dropped.
Thresholds are in HU and sizes in mm.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..volume import IN_PLANE
from .airways import TRACHEA_AREA_MM2

LUNG_AIR_HU = -400.0            # lung / soft-tissue boundary (midway between -860 and 40)
PARENCHYMA_HU = (-960.0, -500.0)  # what lung looks like (pure air -1000 is gas or airway)
MIN_LUNG_ML = 2.0
CUT_LUNG_INSIDE = 0.9          # share of a border-cut lung inside the convex hull of the body
BODY_TISSUE_SHARE = 0.8        # the body hull holds at least this share of a slice's tissue
BODY_PART_SHARE = 0.02         # opened tissue parts of at least this share of the largest are body
BODY_GRID_MM = 2.0             # pixel size of the body hull's grid
TABLE_OPENING_MM = 6.0         # in-plane opening that removes table and blanket shells from the body
BODY_SHARE = 0.5               # share of an enclosed air component inside the body for it to be lung
MIDLINE_SHARE = 0.05           # a midline airway section lies within this share of the body width


def enclosed_lung_air(hu, air, padding, voxel_ml, spacing) -> np.ndarray:
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
