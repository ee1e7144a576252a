"""Read a DICOM Segmentation back onto a CT grid: ``read_seg_segments(path, grid) -> [SegSegment]``.

The SEG is opened with highdicom (``segread``); every frame is placed by its
ImagePositionPatient (PlanePositionSequence) onto the slice of the grid it lies on, so the masks
come back (z, y, x) on that grid whatever order the frames are stored in and with empty frames
omitted. The grid must hold the frames exactly (same orientation, rows, columns, in-plane spacing,
each frame on a slice): a SEG of another grid is refused with one line (InputError).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: mm between a frame's position and the slice it is put on.
FRAME_TOLERANCE_MM = 0.01


@dataclass
class SegSegment:
    """One segment read back: number, label, codes ((value, scheme, meaning) tuples; modifier may
    be None), display colour (sRGB 0-1, from RecommendedDisplayCIELabValue, None without) and its
    bool (z, y, x) mask on the grid asked for."""

    number: int
    label: str
    category: tuple
    type: tuple
    modifier: tuple | None
    color: tuple | None
    mask: np.ndarray


def _code(item) -> tuple:
    return (str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning))


def rgb_from_cielab(values) -> tuple:
    """sRGB (0-1) of a DICOM RecommendedDisplayCIELabValue (inverse of ``dicom_seg.cielab``)."""
    lab = np.array([values[0] * 100 / 65535, values[1] * 255 / 65535 - 128, values[2] * 255 / 65535 - 128])
    fy = (lab[0] + 16) / 116
    f = np.array([fy + lab[1] / 500, fy, fy - lab[2] / 200])
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * np.array([0.95047, 1.0, 1.08883])
    linear = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]) @ xyz
    linear = np.clip(linear, 0, 1)
    rgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return tuple(float(v) for v in np.clip(rgb, 0, 1))


def read_seg_segments(path, shape, spacing, origin, direction) -> list[SegSegment]:
    """The segments of the SEG at ``path`` as masks on the grid ``shape`` (z, y, x), ``spacing``,
    ``origin`` (x, y, z mm, LPS) and ``direction`` (9 numbers, row-major, LPS), as CTVolume has them."""
    from .pydicom_compat import import_highdicom

    hd = import_highdicom()

    try:
        seg = hd.seg.segread(str(path))
    except Exception as error:  # not a SEG, or unreadable
        raise InputError(f"{path}: not a readable DICOM Segmentation ({type(error).__name__}); give a SEG file") \
            from None
    D = np.asarray(direction, float).reshape(3, 3)
    spacing, origin = np.asarray(spacing, float), np.asarray(origin, float)
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    pixel = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    fix = "load the SEG over the CT series it references (ReferencedSeriesSequence)"
    if (int(seg.Rows), int(seg.Columns)) != tuple(shape[1:]) \
            or np.abs(orientation - np.concatenate([D[:, 0], D[:, 1]])).max() > 1e-4 \
            or np.abs(np.array(pixel) - np.array([spacing[1], spacing[0]])).max() > 1e-4:
        raise InputError(f"{path}: the SEG's frames ({seg.Rows} x {seg.Columns}, pixel spacing {pixel}) are not on "
                         f"the grid of this CT ({shape[1]} x {shape[2]}); {fix}")
    frames = np.asarray(seg.pixel_array)
    if frames.ndim == 2:
        frames = frames[None]
    numbers = [s.SegmentNumber for s in seg.SegmentSequence]
    masks = {n: np.zeros(tuple(shape), bool) for n in numbers}
    for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        position = np.array([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        ijk = np.linalg.solve(D * spacing, position - origin)  # (x, y, z) index of the frame's first pixel
        k = int(round(ijk[2]))
        if np.abs(ijk - [0, 0, k]).max() * max(spacing) > FRAME_TOLERANCE_MM or not 0 <= k < shape[0]:
            raise InputError(f"{path}: frame {index + 1} (position {np.round(position, 3).tolist()} mm) is not on a "
                             f"slice of this CT; {fix}")
        masks[number][k] |= frames[index].astype(bool)
    out = []
    for description in seg.SegmentSequence:
        type_item = description.SegmentedPropertyTypeCodeSequence[0]
        modifier = type_item.get("SegmentedPropertyTypeModifierCodeSequence")
        color = description.get("RecommendedDisplayCIELabValue")
        out.append(SegSegment(number=int(description.SegmentNumber), label=str(description.SegmentLabel),
                              category=_code(description.SegmentedPropertyCategoryCodeSequence[0]),
                              type=_code(type_item), modifier=_code(modifier[0]) if modifier else None,
                              color=rgb_from_cielab(color) if color is not None else None,
                              mask=masks[description.SegmentNumber]))
    return out
