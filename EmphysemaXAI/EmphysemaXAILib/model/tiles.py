"""The models' view of a case: the working grid and the lung tiles (2.5D for the severity model).

Working grid: every input is resampled to :data:`WORKING_SPACING` (1.4 mm isotropic, the
resolution of the medium phantoms the model is trained on) with SimpleITK: a Gaussian
anti-aliasing blur whose variance adds up to a working voxel's box width when the input is finer,
linear interpolation for HU, nearest neighbour for labels. Inputs much coarser than the working
spacing (e.g. 5 mm slices) are interpolated and flagged ``low_confidence``; a one-slice input is
repeated into the 2.5D channels and flagged too.

Tiles: the working grid is cut into non-overlapping blocks of ``slices`` x ``size`` x ``size``
voxels (z, y, x) starting at an offset; blocks holding lung become 2.5D patches of shape
(slices, size, size) with every non-lung voxel set to :data:`FILL_HU` (the model sees lung only).
Non-overlapping tiles partition the lung, so the case extent is the lung-weighted mean of the
tile fractions and a fraction map on the working grid follows directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WORKING_SPACING = (1.4, 1.4, 1.4)   # (x, y, z) mm
FILL_HU = 200.0                      # what the model sees outside the lung (top of its window)
#: a tile voxel below this is lung (non-lung sits at FILL_HU; the margin keeps SmoothGrad's noisy
#: copies of FILL_HU out of the lung)
LUNG_BELOW_HU = FILL_HU - 50.0
COARSE_FACTOR = 2.0                  # input spacing above this many working voxels -> low confidence


@dataclass
class WorkingGrid:
    """A case on the working grid: HU (z, y, x) float32, labels (z, y, x) uint8 (0 outside,
    1 right, 2 left, or any non-zero lung code), and how it was made."""

    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple                      # (x, y, z) mm
    input_spacing: tuple                # (x, y, z) mm
    superior_is_high_index: bool = True
    notes: list = field(default_factory=list)
    low_confidence: bool = False
    one_slice: bool = False
    extra: dict = field(default_factory=dict)   # other label maps resampled alongside


def to_working_grid(ct, labels: np.ndarray, extra: dict | None = None,
                    spacing=WORKING_SPACING) -> WorkingGrid:
    """Resample ``ct`` (a CTVolume) and its (z, y, x) lung ``labels`` (and ``extra`` label maps
    on the same grid) to ``spacing`` (x, y, z) mm; see the module docstring."""
    import SimpleITK as sitk

    source = np.asarray(ct.spacing, float)
    target = np.asarray(spacing, float)
    notes, low = [], False
    one_slice = ct.shape[0] == 1
    coarse = [axis for axis, s, t in zip("xyz", source, target)
              if s > COARSE_FACTOR * t and not (one_slice and axis == "z")]
    if coarse:
        low = True
        notes.append(f"input spacing {' x '.join(f'{s:.2f}' for s in source)} mm is much coarser than the "
                     f"model's {' x '.join(f'{t:g}' for t in target)} mm along {', '.join(coarse)}: "
                     "the texture the model relies on is blurred, treat the estimate as low confidence")
    if one_slice:
        low = True
        notes.append("one axial slice: the estimate covers this slice only, not the whole lung")
    superior = float(np.asarray(ct.direction, float).reshape(3, 3)[2, 2]) >= 0
    maps = {"labels": labels, **(extra or {})}
    if np.allclose(source, target, rtol=0.01) or (one_slice and np.allclose(source[:2], target[:2], rtol=0.01)):
        return WorkingGrid(ct.hu.astype(np.float32), labels.astype(np.uint8), tuple(source), tuple(source),
                           superior, notes, low, one_slice, {k: v for k, v in (extra or {}).items()})
    image = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    out_spacing = target.copy()
    if one_slice:
        out_spacing[2] = source[2]
    variance = np.maximum(out_spacing ** 2 - source ** 2, 0.0) / 12.0
    if variance.max() > 0:
        image = sitk.DiscreteGaussian(image, variance=[float(v) for v in variance], maximumKernelWidth=64,
                                      useImageSpacing=True)
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), source, out_spacing)]
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing([float(s) for s in out_spacing])
    reference.SetOrigin(image.GetOrigin())
    reference.SetDirection(image.GetDirection())
    hu = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1000.0))
    resampled = {}
    for name, volume in maps.items():
        label = sitk.GetImageFromArray(np.ascontiguousarray(volume.astype(np.uint8)))
        label.CopyInformation(image)
        resampled[name] = sitk.GetArrayFromImage(
            sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    labels_w = resampled.pop("labels")
    return WorkingGrid(hu.astype(np.float32), labels_w, tuple(out_spacing), tuple(source), superior, notes, low,
                       one_slice, resampled)


@dataclass
class Tiles:
    """Lung tiles of one case: ``images`` (n, slices, size, size) float32 HU with non-lung
    voxels at FILL_HU, ``lung`` (n, slices, size, size) bool, ``corners`` (n, 3) (z, y, x) index
    of each tile's first voxel on the working grid (may be negative: tiles overhang the edges)."""

    images: np.ndarray
    lung: np.ndarray
    corners: np.ndarray
    size: int
    slices: int

    def __len__(self) -> int:
        return len(self.corners)

    @property
    def lung_count(self) -> np.ndarray:
        """(n,) lung voxels per tile."""
        return self.lung.sum(axis=(1, 2, 3))


def _padded(volume: np.ndarray, size: int, slices: int, fill) -> np.ndarray:
    return np.pad(volume, ((slices, slices), (size, size), (size, size)), constant_values=fill)


def tile_corners(lung: np.ndarray, size: int = 64, slices: int = 3, offset=(0, 0, 0)) -> np.ndarray:
    """(n, 3) corners (z, y, x) of the non-overlapping tiles holding lung, on a grid shifted by
    ``offset`` (each component in [0, slices) or [0, size))."""
    nz, ny, nx = lung.shape
    oz, oy, ox = (int(o) for o in offset)
    zs = np.arange(-oz, nz, slices)
    ys = np.arange(-oy, ny, size)
    xs = np.arange(-ox, nx, size)
    # lung voxels per block from a cumulative sum over the padded mask
    pad = _padded(lung.astype(np.int32), size, slices, 0)
    cum = np.pad(pad.cumsum(0).cumsum(1).cumsum(2), ((1, 0), (1, 0), (1, 0)))
    z0, y0, x0 = np.meshgrid(zs + slices, ys + size, xs + size, indexing="ij")
    z1, y1, x1 = z0 + slices, y0 + size, x0 + size
    count = (cum[z1, y1, x1] - cum[z0, y1, x1] - cum[z1, y0, x1] - cum[z1, y1, x0]
             + cum[z0, y0, x1] + cum[z0, y1, x0] + cum[z1, y0, x0] - cum[z0, y0, x0])
    keep = count > 0
    return np.stack([z0[keep] - slices, y0[keep] - size, x0[keep] - size], axis=1)


def extract_tiles(hu: np.ndarray, lung: np.ndarray, corners: np.ndarray, size: int = 64,
                  slices: int = 3, extra: dict | None = None) -> tuple:
    """Gather the tiles at ``corners``: (Tiles, {name: (n, slices, size, size) arrays of
    ``extra`` volumes}). A volume with fewer than ``slices`` slices is repeated along z first."""
    if hu.shape[0] < slices:
        reps = -(-slices // hu.shape[0])
        hu, lung = np.repeat(hu, reps, axis=0), np.repeat(lung, reps, axis=0)
        extra = {k: np.repeat(v, reps, axis=0) for k, v in (extra or {}).items()}
    hu_p = _padded(hu.astype(np.float32), size, slices, FILL_HU)
    lung_p = _padded(lung > 0, size, slices, False)
    flat = _block_index(corners + np.array([slices, size, size]), size, slices, hu_p.shape)
    inside = lung_p.ravel()[flat]
    images = np.where(inside, hu_p.ravel()[flat], np.float32(FILL_HU)).astype(np.float32)
    gathered = {k: _padded(v, size, slices, 0).ravel()[flat] for k, v in (extra or {}).items()}
    return Tiles(images, inside, np.asarray(corners), size, slices), gathered


def _block_index(corners: np.ndarray, size: int, slices: int, shape) -> np.ndarray:
    _, ny, nx = shape
    z = corners[:, 0, None, None, None] + np.arange(slices)[None, :, None, None]
    y = corners[:, 1, None, None, None] + np.arange(size)[None, None, :, None]
    x = corners[:, 2, None, None, None] + np.arange(size)[None, None, None, :]
    return (z * ny + y) * nx + x


def paint_tiles(shape, corners: np.ndarray, values: np.ndarray, size: int = 64, slices: int = 3) -> np.ndarray:
    """A (z, y, x) float32 volume of ``shape`` where every voxel of tile i holds ``values[i]``
    (non-overlapping tiles; voxels outside every tile are 0)."""
    out = np.zeros(shape, np.float32)
    nz, ny, nx = shape
    for (z0, y0, x0), value in zip(corners, values):
        out[max(z0, 0):min(z0 + slices, nz), max(y0, 0):min(y0 + size, ny), max(x0, 0):min(x0 + size, nx)] = value
    return out


def paint_maps(shape, corners: np.ndarray, maps: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A (z, y, x) float32 volume of ``shape`` holding the (n, S, P, P) tile ``maps`` at their
    ``corners`` (non-overlapping tiles; the parts overhanging the volume are dropped); with
    ``out`` (a float32 volume of ``shape``), painted into it (batch after batch of one case's tiles)."""
    out = np.zeros(shape, np.float32) if out is None else out
    nz, ny, nx = shape
    slices, size = maps.shape[1], maps.shape[2]
    for (z0, y0, x0), values in zip(corners, maps):
        z1, y1, x1 = max(z0, 0), max(y0, 0), max(x0, 0)
        out[z1:min(z0 + slices, nz), y1:min(y0 + size, ny), x1:min(x0 + size, nx)] = \
            values[z1 - z0:min(slices, nz - z0), y1 - y0:min(size, ny - y0), x1 - x0:min(size, nx - x0)]
    return out


class _ImageVoxels:
    """A SimpleITK image's voxels as a writable NumPy array without a copy: ``np.asarray`` of
    this object is a (z, y, x) array whose ``base`` holds the image, so the buffer lives as long
    as the array (``sitk.GetArrayViewFromImage`` alone does not keep its image alive)."""

    def __init__(self, image):
        import SimpleITK as sitk

        self.image = image
        view = sitk.GetArrayViewFromImage(image)
        self.__array_interface__ = {"shape": view.shape, "typestr": view.dtype.str, "version": 3,
                                    "data": (view.ctypes.data, False)}


def from_working_grid(volume: np.ndarray, grid: WorkingGrid, ct) -> np.ndarray:
    """A (z, y, x) float32 volume on the working grid resampled (linear) onto ``ct``'s grid.

    The result is the resampled SimpleITK image's own buffer (writable, kept alive by the
    array): the CT-size volume exists once, never also as a copy."""
    import SimpleITK as sitk

    if np.allclose(grid.spacing, ct.spacing, rtol=0.01) and volume.shape == ct.shape:
        return volume.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, np.float32))
    image.SetSpacing([float(s) for s in grid.spacing])
    image.SetOrigin([float(o) for o in ct.origin])
    image.SetDirection([float(d) for d in ct.direction])
    resample = sitk.ResampleImageFilter()   # the CT's geometry only: no copy of its voxels
    resample.SetOutputSpacing([float(s) for s in ct.spacing])
    resample.SetOutputDirection([float(d) for d in ct.direction])
    resample.SetInterpolator(sitk.sitkLinear)
    resample.SetDefaultPixelValue(0.0)
    resample.SetOutputPixelType(sitk.sitkFloat32)
    resample.SetSize([int(n) for n in ct.shape[::-1]])
    resample.SetOutputOrigin([float(o) for o in ct.origin])
    return np.asarray(_ImageVoxels(resample.Execute(image)))
