"""One canonical orientation for every step: the nearest axial, LPS-like grid.

Chest CT arrives stored axially (the common case), coronally, sagittally or with flipped
axes. Thirds, zones, the CNN's tiles and the classical engine all reason along the array's
axes, so every input is brought once, right after reading, onto the grid whose index axes
(x, y, z) point to patient Left, Posterior and Superior (ITK's identity direction in LPS):

- **near-orthogonal grids** (every index axis within :data:`OBLIQUE_LIMIT_DEG` of a patient
  axis): the voxels are only transposed and flipped. Nothing is interpolated, the mapping is
  exact both ways, and the same chest stored in any of the 48 axis orders / flips gives the
  same canonical array, hence the same numbers. A small residual rotation stays in the
  direction matrix.
- **oblique grids**: resampled (SimpleITK, nearest neighbour so that HU values and the
  density histogram are kept) onto an axis-aligned grid covering the input's extent, voxels
  outside the input at :data:`~.volume.OUTSIDE_FOV_HU`; outputs go back by resampling
  (nearest neighbour for label maps, linear for float maps).

:class:`Reorientation` records the input grid and maps arrays between the two grids;
``CTVolume.orientation`` holds it, and writers use :meth:`Reorientation.to_input` so that
every file the user gets lies on the grid of the file the user gave.

Arrays are (z, y, x); spacing / origin (x, y, z) in mm, LPS; direction as ITK (row-major,
columns = the LPS directions of the x, y, z index axes).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..volume import CTVolume

#: Largest angle (degrees) between an index axis and its nearest patient axis that is still
#: handled by transposing / flipping; beyond it the volume is resampled.
OBLIQUE_LIMIT_DEG = 10.0


@dataclass(frozen=True)
class Reorientation:
    """How the input grid maps onto the canonical grid.

    Attributes:
        source_axis: for canonical index axes (x, y, z), the input index axis (0 x, 1 y, 2 z)
            it comes from.
        flip: for canonical index axes (x, y, z), whether the input axis runs the other way.
        input_shape: (z, y, x) of the input grid; input_spacing, input_origin (x, y, z) mm
            LPS, input_direction (9 numbers, row-major): the input grid as read.
        resampled: True when the input was oblique and was resampled (not exactly invertible;
            HU by nearest neighbour, so the density histogram keeps its values: linear
            interpolation averaged noise away and lowered %LAA-950 by a third on a phantom).
        canonical_shape, canonical_spacing, canonical_origin, canonical_direction: the
            canonical grid (needed to resample back when ``resampled``).
        oblique_deg: largest angle between an input index axis and its patient axis.
    """

    source_axis: tuple
    flip: tuple
    input_shape: tuple
    input_spacing: tuple
    input_origin: tuple
    input_direction: tuple
    canonical_shape: tuple
    canonical_spacing: tuple
    canonical_origin: tuple
    canonical_direction: tuple
    resampled: bool = False
    oblique_deg: float = 0.0

    @property
    def identity(self) -> bool:
        """True when the canonical array is the input array itself."""
        return not self.resampled and self.source_axis == (0, 1, 2) and not any(self.flip)

    def describe(self) -> str:
        """One line for warnings / summaries, e.g. 'stored coronal: transposed to axial'."""
        names = "xyz"
        if self.resampled:
            return (f"oblique grid ({self.oblique_deg:.1f} degrees from the patient axes): resampled onto an "
                    "axial grid for the analysis; outputs resampled back onto the input grid")
        moves = ", ".join(f"{names[a]}{' flipped' if f else ''}"
                          for a, f in zip(self.source_axis, self.flip))
        return f"input axes reordered to the canonical axial grid (canonical x, y, z from input {moves})"

    def input_geometry(self) -> dict:
        """``shape``, ``spacing``, ``origin``, ``direction`` of the input grid (JSON-ready)."""
        return {"shape": [int(n) for n in self.input_shape], "spacing": [float(s) for s in self.input_spacing],
                "origin": [float(o) for o in self.input_origin],
                "direction": [float(d) for d in self.input_direction]}

    # ------------------------------------------------------------------ arrays

    def _array_axes(self) -> tuple:
        """np.transpose order taking the input (z, y, x) array to the canonical one."""
        # canonical array axis 2 - w holds canonical index axis w, from input index axis
        # source_axis[w], which is input array axis 2 - source_axis[w]
        return tuple(2 - self.source_axis[2 - a] for a in range(3))

    def to_canonical(self, array: np.ndarray, labels: bool = False, outside: float = 0) -> np.ndarray:
        """An input-grid (z, y, x) array on the canonical grid (a contiguous copy unless the
        mapping is the identity). When resampling: ``labels`` chooses nearest neighbour, and
        canonical voxels outside the input get ``outside``."""
        array = np.asarray(array)
        if array.shape != tuple(self.input_shape):
            raise InputError(f"an array of {array.shape} voxels does not lie on the input grid "
                             f"{tuple(int(n) for n in self.input_shape)}")
        if self.identity:
            return array
        if self.resampled:
            return _resample(array, self._input_grid(), self._canonical_grid(), labels, outside)
        moved = np.transpose(array, self._array_axes())
        flips = tuple(2 - w for w in range(3) if self.flip[w])
        return np.ascontiguousarray(np.flip(moved, axis=flips) if flips else moved)

    def to_input(self, array: np.ndarray, labels: bool | None = None) -> np.ndarray:
        """A canonical-grid (z, y, x) array back on the input grid. ``labels`` (default: the
        array is integral) chooses nearest-neighbour over linear when resampling."""
        array = np.asarray(array)
        if array.shape != tuple(self.canonical_shape):
            raise ValueError(f"array {array.shape} is not on the canonical grid {self.canonical_shape}")
        if self.identity:
            return array
        if self.resampled:
            if labels is None:
                labels = not np.issubdtype(array.dtype, np.floating)
            return _resample(array, self._canonical_grid(), self._input_grid(), labels)
        flips = tuple(2 - w for w in range(3) if self.flip[w])
        unflipped = np.flip(array, axis=flips) if flips else array
        return np.ascontiguousarray(np.transpose(unflipped, np.argsort(self._array_axes())))

    def _input_grid(self):
        return self.input_shape, self.input_spacing, self.input_origin, self.input_direction

    def _canonical_grid(self):
        return self.canonical_shape, self.canonical_spacing, self.canonical_origin, self.canonical_direction


def _axis_assignment(D: np.ndarray):
    """(source_axis, flip, angle_deg) of the patient axis nearest to each index axis.

    Raises InputError when two index axes share their nearest patient axis (a grid close to
    45 degrees), where no axial order exists.
    """
    nearest = np.argmax(np.abs(D), axis=0)  # patient axis of each input index axis
    if len(set(nearest.tolist())) != 3:
        raise InputError("the volume's axes are about 45 degrees from the patient axes, so no "
                         "axial order exists: resample it onto an axial grid (e.g. Slicer's "
                         "Resample Scalar Volume) and try again")
    source = [0, 0, 0]
    flip = [False, False, False]
    angles = []
    for c in range(3):
        w = int(nearest[c])
        source[w] = c
        flip[w] = bool(D[w, c] < 0)
        angles.append(float(np.degrees(np.arccos(min(1.0, abs(D[w, c]) / np.linalg.norm(D[:, c]))))))
    return tuple(source), tuple(flip), max(angles)


def reorientation(shape, spacing, origin, direction) -> Reorientation:
    """The :class:`Reorientation` of a grid ((z, y, x) shape; x, y, z spacing / origin, LPS)."""
    D = np.asarray(direction, float).reshape(3, 3)
    if not np.all(np.isfinite(D)) or abs(np.linalg.det(D)) < 1e-3:
        raise InputError("the volume's direction matrix is degenerate (its axes are not independent): "
                         "fix the orientation in the file header")
    source, flip, angle = _axis_assignment(D)
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing, float)
    origin = np.asarray(origin, float)
    sizes_xyz = np.array(shape[::-1])
    new_spacing = tuple(float(spacing[source[w]]) for w in range(3))
    new_sizes = tuple(int(sizes_xyz[source[w]]) for w in range(3))
    if angle <= OBLIQUE_LIMIT_DEG:
        start = np.array([(sizes_xyz[c] - 1) if flip[source.index(c)] else 0 for c in range(3)], float)
        new_origin = origin + D @ (spacing * start)
        columns = [D[:, source[w]] * (-1.0 if flip[w] else 1.0) for w in range(3)]
        new_direction = np.column_stack(columns)
        resampled = False
    else:
        # axis-aligned grid over the bounding box of the input's voxel centres
        corners = np.array([[i, j, k] for i in (0, sizes_xyz[0] - 1) for j in (0, sizes_xyz[1] - 1)
                            for k in (0, sizes_xyz[2] - 1)], float)
        points = origin + (D @ (corners * spacing).T).T
        low, high = points.min(axis=0), points.max(axis=0)
        new_sizes = tuple(int(np.floor((high[w] - low[w]) / new_spacing[w] + 1e-6)) + 1 for w in range(3))
        new_origin, new_direction, resampled = low, np.eye(3), True
    return Reorientation(
        source_axis=source, flip=flip, input_shape=shape, input_spacing=tuple(float(s) for s in spacing),
        input_origin=tuple(float(o) for o in origin), input_direction=tuple(float(d) for d in D.ravel()),
        canonical_shape=tuple(new_sizes[::-1]), canonical_spacing=new_spacing,
        canonical_origin=tuple(float(o) for o in new_origin),
        canonical_direction=tuple(float(d) for d in new_direction.ravel()), resampled=resampled,
        oblique_deg=round(angle, 3))


def canonical(ct) -> CTVolume:
    """``ct`` on the canonical axial grid (a new CTVolume whose ``orientation`` maps back), or
    ``ct`` itself when it already is (its ``orientation`` then says so). Idempotent: a volume
    that was already reoriented is returned unchanged."""
    if getattr(ct, "orientation", None) is not None:
        return ct
    plan = reorientation(ct.shape, ct.spacing, ct.origin, ct.direction)
    if plan.identity:
        return replace(ct, orientation=plan)
    from ..volume import OUTSIDE_FOV_HU

    hu = plan.to_canonical(ct.hu, labels=True, outside=OUTSIDE_FOV_HU)  # HU by nearest neighbour
    warnings = list(ct.read_warnings)
    if plan.resampled:
        warnings.append(plan.describe())
    return replace(ct, hu=hu, spacing=plan.canonical_spacing, origin=plan.canonical_origin,
                   direction=plan.canonical_direction, read_warnings=warnings, orientation=plan)


def _resample(array, source_grid, target_grid, labels: bool, default=0):
    """``array`` on ``source_grid`` resampled onto ``target_grid`` (grids: shape (z, y, x),
    spacing, origin, direction); nearest neighbour for labels, else linear."""
    import SimpleITK as sitk

    def image_of(values, grid):
        shape, spacing, origin, direction = grid
        image = sitk.GetImageFromArray(values)
        image.SetSpacing([float(s) for s in spacing])
        image.SetOrigin([float(o) for o in origin])
        image.SetDirection([float(d) for d in direction])
        return image

    source = image_of(np.ascontiguousarray(array), source_grid)
    shape, spacing, origin, direction = target_grid
    reference = sitk.Image([int(n) for n in shape[::-1]], source.GetPixelID())
    reference.SetSpacing([float(s) for s in spacing])
    reference.SetOrigin([float(o) for o in origin])
    reference.SetDirection([float(d) for d in direction])
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    pixel = source.GetPixelID() if labels else sitk.sitkFloat32
    out = sitk.Resample(source, reference, sitk.Transform(), interpolator, float(default), pixel)
    values = sitk.GetArrayFromImage(out)
    if not labels and np.issubdtype(np.asarray(array).dtype, np.integer):
        values = np.rint(values).astype(np.asarray(array).dtype)
    return values
