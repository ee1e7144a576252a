"""Slice geometry of a DICOM series: orientation, stack, slice order, spacing, and the regular grid.

Slices are sorted by their position along the slice normal (ImagePositionPatient projected on
the cross product of the ImageOrientationPatient row and column directions), never by file
name. When some slices lack a position, InstanceNumber orders them (if it is present, unique
and runs with the positions that are there) and their positions are interpolated from the
others; otherwise the series is refused. The slice spacing comes from the positions, not
SliceThickness. Positions rounded in the header jitter by thousandths of a millimetre; gaps
(missing slices), non-uniform spacing and gantry tilt are detected and resampled onto a regular
grid with a warning (or refused when ``irregular="refuse"``). A series mixing stacks of several
orientations is read through its axial stack, or refused when it has none.

All positions and directions are in the patient's LPS frame, in millimetres, as DICOM writes them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import OUTSIDE_FOV_HU, CTVolume
from .dicom_header import (
    as_float,
    header_get,
    header_number,
    name_list,
    raw_number,
    shown_value,
    tag_label,
    value_items,
)

#: Relative + absolute tolerance on slice spacing (mm): header rounding jitter stays inside.
SPACING_RTOL = 0.01
SPACING_ATOL = 0.02
#: In-plane drift per slice (mm), relative to the slice step, above which a series is tilted.
TILT_TOLERANCE = 1e-3
#: Row and column directions further than this (degrees) from perpendicular are refused;
#: closer ones are made exactly perpendicular.
PERPENDICULAR_TOLERANCE_DEG = 1.0
#: A stack is axial when its slice normal is within this angle (degrees) of the patient z axis.
AXIAL_LIMIT_DEG = 45.0


def image_orientation(path: Path, ds) -> tuple[np.ndarray, np.ndarray] | None:
    """(row, column) unit direction vectors (LPS) from ImageOrientationPatient, or None when
    the tag is absent.

    Refuses (InputError naming the tag and the file) values that do not define a slice plane:
    not six finite numbers, a zero-length row or column direction, or directions further than
    :data:`PERPENDICULAR_TOLERANCE_DEG` from perpendicular (parallel ones included). Closer
    ones are made exactly perpendicular (the column direction is corrected).
    """
    value = header_get(ds, "ImageOrientationPatient")
    items = value_items(value)
    if not items:
        return None
    numbers = np.array([as_float(v) for v in items])
    where = f"{path.name}: {tag_label('ImageOrientationPatient')} is {shown_value(value)}"
    fix = "fix the header or re-export the series"
    if numbers.size != 6 or not np.all(np.isfinite(numbers)):
        raise InputError(f"{where}; it needs six finite numbers (row and column directions): {fix}")
    row, col = numbers[:3], numbers[3:]
    row_length, col_length = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if min(row_length, col_length) < 1e-6:
        which = "row" if row_length < 1e-6 else "column"
        raise InputError(f"{where}: its {which} direction has zero length, so the slice plane is "
                         f"undefined: {fix}")
    row, col = row / row_length, col / col_length
    cosine = float(row @ col)
    if abs(cosine) > np.sin(np.radians(PERPENDICULAR_TOLERANCE_DEG)):
        angle = float(np.degrees(np.arccos(min(1.0, abs(cosine)))))
        what = "parallel" if angle < 0.01 else f"{angle:.2f} degrees apart instead of perpendicular"
        raise InputError(f"{where}: the row and column directions are {what}, so the slice plane "
                         f"is undefined: {fix}")
    if abs(cosine) > 1e-4:  # header rounding: make the grid orthogonal
        col = col - cosine * row
        col = col / np.linalg.norm(col)
    return row, col


def axes_or_axial(orientation) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of an orientation, the axial default (LPS x, y) when it is unknown."""
    return orientation if orientation is not None else (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))


def plane_name(normal) -> str:
    """'axial', 'coronal', 'sagittal' or 'oblique (20 degrees from axial)' for a slice normal."""
    axis = int(np.argmax(np.abs(normal)))
    name = ("sagittal", "coronal", "axial")[axis]
    angle = float(np.degrees(np.arccos(min(1.0, abs(float(normal[axis]))))))
    return name if angle <= 10 else f"oblique ({angle:.0f} degrees from {name})"


def image_position(ds) -> np.ndarray | None:
    """ImagePositionPatient (LPS, mm) as an array, or None when absent or not 3 finite numbers."""
    numbers = [as_float(v) for v in value_items(header_get(ds, "ImagePositionPatient"))]
    if len(numbers) != 3 or not all(np.isfinite(numbers)):
        return None
    return np.array(numbers)


def consistent_slices(items, uid) -> tuple[list, int]:
    """The slices of one stack, sharing size (Rows x Columns) and orientation; returns
    (items, number of slices dropped).

    Orientations are equal when their ImageOrientationPatient directions agree within 1e-3.
    When the series mixes orientations (for example axial and sagittal slices under one
    SeriesInstanceUID), the stack whose slice normal is closest to the patient z axis is kept
    (the largest one if several sizes share it); when no stack is within
    :data:`AXIAL_LIMIT_DEG` of axial, the series is refused naming the orientations found.
    With one orientation and several sizes, the largest group is kept.
    """
    groups = []  # dicts: size (rows, columns), axes (row and column directions, 6 numbers), items
    for path, ds in items:
        size = (int(header_number(ds, "Rows") or 0), int(header_number(ds, "Columns") or 0))
        orientation = image_orientation(path, ds)
        axes = np.concatenate(axes_or_axial(orientation))
        for group in groups:
            if group["size"] == size and np.max(np.abs(group["axes"] - axes)) <= 1e-3:
                group["items"].append((path, ds))
                break
        else:
            groups.append({"size": size, "axes": axes, "items": [(path, ds)]})
    if len(groups) == 1:
        return items, 0
    for group in groups:
        group["normal"] = np.cross(group["axes"][:3], group["axes"][3:])
        group["axial"] = abs(float(group["normal"][2]))
    best = max(group["axial"] for group in groups)
    several = any(np.max(np.abs(g["axes"] - groups[0]["axes"])) > 1e-3 for g in groups)
    if several and best < np.cos(np.radians(AXIAL_LIMIT_DEG)):
        found = "; ".join(f"{plane_name(g['normal'])}, {len(g['items'])} slices of "
                          f"{g['size'][1]} x {g['size'][0]}" for g in groups)
        raise InputError(f"series {uid} mixes stacks of different orientation ({found}) and none "
                         "is axial: choose another series (series_uid, --series), or split the series into "
                         "one stack per orientation (e.g. by ImageOrientationPatient) and give one")
    chosen = max((g for g in groups if g["axial"] >= best - 1e-6), key=lambda g: len(g["items"]))
    return chosen["items"], len(items) - len(chosen["items"])


def order_slices(items, normal, warnings) -> tuple[list, list]:
    """Sort the slices along the slice ``normal`` (LPS unit vector); return (items, positions).

    ``positions`` are the LPS points (mm) of the slices' first voxels. With every
    ImagePositionPatient present, the order is by position along the normal (file names and
    InstanceNumber play no part). When some are missing, InstanceNumber must be present and
    unique on every slice and run with the positions present: the slices are then ordered by
    it and the missing positions come from a straight-line fit of position on InstanceNumber
    (refused when the fit misses a present position by more than a twentieth of a slice step,
    at least 0.04 mm). With fewer than two positions present the head / feet direction is
    unknown, and so is everything else: InputError naming up to 3 of the slices without one.
    """
    positions = [image_position(ds) for _, ds in items]
    missing = [i for i, position in enumerate(positions) if position is None]
    if len(items) == 1:
        return items, positions
    if not missing:
        order = np.argsort([float(position @ normal) for position in positions], kind="stable")
        return [items[i] for i in order], [positions[i] for i in order]

    count = f"all {len(items)} slices" if len(missing) == len(items) else \
        f"{len(missing)} of {len(items)} slices"
    lacking = f"{count} lack {tag_label('ImagePositionPatient')} ({name_list([items[i][0] for i in missing])})"

    def refuse(reason):
        raise InputError(f"{lacking} and {reason}, so the slice order is unknown: re-export the "
                         "series with positions, or remove the slices without one")

    instance = [header_number(ds, "InstanceNumber") for _, ds in items]
    if any(n is None for n in instance):
        refuse(f"{tag_label('InstanceNumber')} is missing on {sum(n is None for n in instance)} slices")
    if len(set(instance)) < len(instance):
        refuse(f"{tag_label('InstanceNumber')} repeats")
    order = np.argsort(instance, kind="stable")
    items = [items[i] for i in order]
    positions = [positions[i] for i in order]
    numbers = np.array([instance[i] for i in order])
    present = [i for i, position in enumerate(positions) if position is not None]
    if len(present) < 2:
        # InstanceNumber gives an order but not which end is the head (scanners number both
        # ways): upper and lower zones could be swapped without a word. Refuse.
        refuse("fewer than two slices have one, so which end of the stack is the head is "
               "unknown (InstanceNumber runs head-first on some scanners, feet-first on others)")

    known = np.array([positions[i] for i in present])
    steps = np.diff(known @ normal)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        refuse("InstanceNumber does not run with the positions of the other slices")
    design = np.column_stack([np.ones(len(present)), numbers[present]])
    fit, *_ = np.linalg.lstsq(design, known, rcond=None)  # rows: position at 0, step per number
    residual = float(np.max(np.linalg.norm(known - design @ fit, axis=1)))
    step = abs(float(fit[1] @ normal))
    if residual > max(2 * SPACING_ATOL, 0.05 * step):
        refuse("the other slices are not evenly spaced in InstanceNumber (a straight-line fit "
               f"of position on InstanceNumber misses one by {residual:.2f} mm), so the missing "
               "positions cannot be interpolated")
    for i in range(len(items)):
        if positions[i] is None:
            positions[i] = fit[0] + fit[1] * numbers[i]
    warnings.append(f"{lacking}: ordered by InstanceNumber, their positions interpolated from "
                    f"the other slices (straight-line fit, largest residual {residual:.3f} mm)")
    order = np.argsort([float(position @ normal) for position in positions], kind="stable")
    return [items[i] for i in order], [positions[i] for i in order]


def pixel_spacing(items, warnings) -> tuple:
    """In-plane voxel size (x = column spacing, y = row spacing) in mm, from PixelSpacing
    (ImagerPixelSpacing when it is absent) of the first slice.

    Every slice's value is checked: not two positive finite numbers is refused (InputError
    naming the tag and the file). Missing on the first slice: 1 mm with a warning.
    """
    result = None
    for path, ds in items:
        keyword = next((k for k in ("PixelSpacing", "ImagerPixelSpacing") if value_items(header_get(ds, k))), None)
        if keyword is None:
            continue
        value = header_get(ds, keyword)
        numbers = [as_float(v) for v in value_items(value)]
        if len(numbers) != 2 or not all(np.isfinite(numbers)) or min(numbers) <= 0:
            raise InputError(f"{path.name}: {tag_label(keyword)} is {shown_value(value)}; it needs two positive "
                             "pixel sizes in mm (row spacing\\column spacing): fix the header or "
                             "re-export the series")
        if result is None and path == items[0][0]:
            result = (numbers[1], numbers[0])
    if result is None:
        warnings.append("PixelSpacing missing: 1 mm assumed in-plane")
        return 1.0, 1.0
    return result


def header_step(ds, warnings) -> tuple[float | None, str | None]:
    """Slice spacing (mm) from SpacingBetweenSlices, else SliceThickness, for series without
    positions; a zero, negative or non-finite value is ignored with a warning. Returns
    (mm or None, the tag used)."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = raw_number(ds, keyword)
        if value is None:
            continue
        if np.isfinite(value) and value > 0:
            return value, keyword
        warnings.append(f"{tag_label(keyword)} is {shown_value(header_get(ds, keyword))}: not a positive length, "
                        "ignored")
    return None, None


def regular_volume(hu, items, positions, row, col, spacing, irregular, warnings) -> CTVolume:
    """Build the CTVolume, resampling along z (gaps, non-uniform) or correcting tilt.

    ``positions``: LPS (mm) of each slice of ``hu`` in order (all None when unknown);
    ``row``, ``col``: LPS unit directions of the x and y index axes; ``spacing``: (x, y) mm.
    """
    sx, sy = spacing
    normal = np.cross(row, col)
    direction = np.column_stack([row, col, normal])
    origin = positions[0] if positions[0] is not None else np.zeros(3)

    def volume(array, dz, geometry):
        return CTVolume(hu=array, spacing=(float(sx), float(sy), float(dz)),
                        origin=tuple(float(v) for v in origin),
                        direction=tuple(float(v) for v in direction.ravel()), geometry=geometry)

    if len(items) == 1:  # (a stack without positions was refused by order_slices)
        step, _ = header_step(items[0][1], warnings)
        if step is None:
            warnings.append("one slice of unknown thickness: 1 mm assumed")
        return volume(hu, step or 1.0, {"method": "single_slice"})

    p = np.array(positions)
    along = p @ normal
    steps = np.diff(along)
    if np.any(steps < SPACING_ATOL):
        raise InputError(f"{int(np.sum(steps < SPACING_ATOL)) + 1} slices share a position "
                         "(several acquisitions or echoes in one series?): choose one with "
                         "series_uid (--series) or split the series")
    total = along[-1] - along[0]
    # The regular step: the small end of the steps (gaps and thicker segments are larger).
    step = float(np.quantile(steps, 0.1))
    tol = max(SPACING_ATOL, SPACING_RTOL * step)
    uniform = bool(np.all(np.abs(steps - step) <= tol))
    drift = (p[-1] - p[0]) / (len(p) - 1) - normal * (total / (len(p) - 1))
    tilted = float(np.linalg.norm(drift)) > max(TILT_TOLERANCE * step, 0.005)
    geometry = {"method": "uniform",
                "steps_mm": [round(float(s), 4) for s in (steps.min(), np.median(steps), steps.max())]}

    if uniform and not tilted:
        return volume(hu, total / (len(p) - 1), geometry)
    if irregular == "refuse":
        what = "gantry tilt" if tilted else "non-uniform slice spacing or missing slices"
        raise InputError(f"series has {what} (steps {steps.min():.3f}-{steps.max():.3f} mm); "
                         "rerun with irregular slices allowed, or resample the series first")
    if tilted and not uniform:
        raise InputError("series has both gantry tilt and irregular slice spacing: resample it "
                         "to a regular grid (e.g. in 3D Slicer) before analysis")
    if tilted:
        angle = float(np.degrees(np.arctan2(np.linalg.norm(drift), total / (len(p) - 1))))
        warnings.append(f"gantry tilt of {angle:.2f} degrees corrected by resampling onto an "
                        "orthogonal grid (linear interpolation)")
        geometry.update(method="tilt_corrected", tilt_deg=round(angle, 3))
        return _correct_tilt(volume(hu, total / (len(p) - 1), geometry), p)

    gaps = int(np.sum(steps > step + tol))
    warnings.append(f"slice spacing not uniform ({steps.min():.3f}-{steps.max():.3f} mm, "
                    f"{gaps} gaps wider than {step:.3f} mm): resampled along z to {step:.3f} mm "
                    "by linear interpolation")
    geometry.update(method="resampled_z")
    return volume(_resample_z(hu, along - along[0], step), step, geometry)


def _resample_z(hu: np.ndarray, offsets: np.ndarray, step: float) -> np.ndarray:
    """Linear interpolation along z from slices at ``offsets`` (mm) onto a regular ``step`` grid."""
    count = int(round(offsets[-1] / step)) + 1
    out = np.empty((count,) + hu.shape[1:], dtype=hu.dtype)
    for k in range(count):
        z = min(k * step, offsets[-1])
        upper = int(np.searchsorted(offsets, z, side="left"))
        if upper == 0 or abs(offsets[upper] - z) < 1e-6:
            out[k] = hu[upper]
            continue
        lower = upper - 1
        w = (z - offsets[lower]) / (offsets[upper] - offsets[lower])
        mixed = hu[lower].astype(np.float32) * (1 - w) + hu[upper].astype(np.float32) * w
        out[k] = np.rint(mixed) if out.dtype == np.int16 else mixed
    return out


def _correct_tilt(vol: CTVolume, positions: np.ndarray) -> CTVolume:
    """Resample a gantry-tilted stack onto the orthogonal grid of its first slice.

    The stored slices sit at ``positions`` (LPS, mm): index (i, j, k) is at
    ``P0 + A @ (i, j, k)`` with ``A = [sx*row, sy*col, step]``. The output grid uses
    ``B = [sx*row, sy*col, dz*normal]`` with the same origin. SimpleITK resamples through the
    affine map from output points to where the same index lies in the unsheared input image.
    """
    import SimpleITK as sitk

    sx, sy, dz = vol.spacing
    D = vol.direction_matrix
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    A = np.column_stack([sx * D[:, 0], sy * D[:, 1], step])
    B = np.column_stack([sx * D[:, 0], sy * D[:, 1], dz * D[:, 2]])
    image = vol.to_sitk()  # unsheared: geometry B, the voxel values of the tilted stack
    transform = sitk.AffineTransform(3)
    transform.SetMatrix((B @ np.linalg.inv(A)).ravel().tolist())
    transform.SetCenter([float(v) for v in vol.origin])
    out = sitk.Resample(image, image, transform, sitk.sitkLinear, float(OUTSIDE_FOV_HU),
                        sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(out)
    vol.hu = np.rint(array).astype(np.int16) if vol.hu.dtype == np.int16 else array
    return vol
