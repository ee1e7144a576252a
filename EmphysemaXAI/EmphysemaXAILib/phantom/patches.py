"""Patch sampler for training: 2D / 2.5D patches of a phantom with per-patch truth.

A patch is ``slices`` adjacent axial slices (the 2.5D channels) of ``size`` x ``size`` voxels at
the phantom's native resolution, centred on a lung voxel. Its truth: the emphysema fraction
(lesion voxels / lung voxels inside the patch), the lung fraction, the dominant subtype code
(0 when no lesion) and the third (0 upper, 1 middle, 2 lower) of its centre slice.
Extraction is one vectorised gather, so thousands of patches cost well under a second once the
phantom exists; generating many patches per phantom amortises the generation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.regions import slice_thirds


@dataclass
class PatchBatch:
    """n patches and their truth (arrays indexed by patch)."""

    images: np.ndarray               # (n, slices, size, size) float32 HU
    lung: np.ndarray                 # (n, slices, size, size) bool lung mask
    lesion: np.ndarray               # (n, slices, size, size) uint8 emphysema codes
    emphysema_fraction: np.ndarray   # (n,) lesion voxels / lung voxels
    lung_fraction: np.ndarray        # (n,) lung voxels / patch voxels
    subtype: np.ndarray              # (n,) dominant emphysema code, 0 none
    zone: np.ndarray                 # (n,) third of the centre slice: 0 upper, 1 middle, 2 lower
    centers: np.ndarray              # (n, 3) (z, y, x) voxel of the centre

    def __len__(self) -> int:
        return len(self.centers)


def sample_patches(phantom, n: int, size: int = 64, slices: int = 3, rng=None,
                   min_lung: float = 0.3) -> PatchBatch:
    """Draw ``n`` patches centred on lung voxels of ``phantom`` (seeded by ``rng``).

    Patches whose lung fraction is below ``min_lung`` are redrawn (up to 10 rounds).
    """
    rng = np.random.default_rng(rng)
    hu = phantom.ct.hu
    lungs = phantom.labels["lungs"]
    emphysema = phantom.labels["emphysema"]
    nz, ny, nx = hu.shape
    half, depth = size // 2, slices // 2
    inner = lungs[depth:nz - depth, half:ny - half, half:nx - half] > 0
    candidates = np.flatnonzero(inner)
    if not len(candidates):
        raise ValueError("the phantom has no lung far enough from its borders for these patches")
    thirds = slice_thirds(lungs > 0)
    offsets_z = np.arange(slices) - depth
    offsets_yx = np.arange(size) - half
    chosen = []
    need = n
    for _ in range(10):
        pick = rng.choice(candidates, size=need * 2 if need < n else need, replace=True)
        z, y, x = np.unravel_index(pick, inner.shape)
        centers = np.stack([z + depth, y + half, x + half], axis=1)
        flat = _flat_index(centers, offsets_z, offsets_yx, (ny, nx))
        lung_fraction = (lungs.ravel()[flat] > 0).mean(axis=(1, 2, 3))
        chosen.append(centers[lung_fraction >= min_lung])
        need = n - sum(len(c) for c in chosen)
        if need <= 0:
            break
    centers = np.concatenate(chosen)[:n]
    flat = _flat_index(centers, offsets_z, offsets_yx, (ny, nx))
    lung = lungs.ravel()[flat] > 0
    lesion = emphysema.ravel()[flat]
    lung_count = lung.sum(axis=(1, 2, 3))
    counts = np.stack([(lesion == code).sum(axis=(1, 2, 3)) for code in range(1, 5)], axis=1)
    lesion_total = counts.sum(axis=1)
    return PatchBatch(
        images=hu.ravel()[flat].astype(np.float32), lung=lung, lesion=lesion,
        emphysema_fraction=lesion_total / np.maximum(lung_count, 1),
        lung_fraction=lung_count / float(lung[0].size),
        subtype=np.where(lesion_total > 0, counts.argmax(axis=1) + 1, 0),
        zone=thirds[centers[:, 0]], centers=centers)


def _flat_index(centers, offsets_z, offsets_yx, plane):
    ny, nx = plane
    z = centers[:, 0, None, None, None] + offsets_z[None, :, None, None]
    y = centers[:, 1, None, None, None] + offsets_yx[None, None, :, None]
    x = centers[:, 2, None, None, None] + offsets_yx[None, None, None, :]
    return (z * ny + y) * nx + x
