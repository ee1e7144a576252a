"""Emphysema lesions of the phantom, placed until the target extent is reached.

Subtypes (codes of ``docs/contracts.md``):
- centrilobular (1): clusters of 3-8 lucencies of 2-10 mm, away from the pleura;
- panlobular (2): diffuse destruction, irregular confluent blobs of 12-30 mm;
- paraseptal (3): 5-10 mm subpleural lucencies along the pleura and the fissures;
- bullous (4): subpleural bullae of 11-40 mm.

Only "eligible" lung voxels become lesions: lung parenchyma not touched by a vessel, an airway
wall or a fissure, so that every lesion voxel's noise-free HU is below -950 while every other
lung voxel stays at or above -950 (``docs/severity.md``). The extent is shared between the thirds of
the lung by the zone weights; a third that runs out of room passes its remainder on.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .params import DEFAULT_ZONES, SUBTYPE_CODES
from .tubes import Grid

LESION_MAX_HU = -955.0  # lesion voxels stay below this, safely under -950
#: (low, high) HU of each subtype's lesions before texture.
LESION_HU = {"centrilobular": (-1000.0, -972.0), "panlobular": (-985.0, -962.0),
             "paraseptal": (-1000.0, -975.0), "bullous": (-1000.0, -992.0)}


class LesionPlacer:
    """Places lesions into ``emphysema`` (uint8 codes) and ``hu`` (float32) in place."""

    def __init__(self, hu, emphysema, eligible, thirds, near_fissure, grid: Grid, rng):
        self.hu, self.emphysema, self.eligible = hu, emphysema, eligible
        self.grid, self.rng = grid, rng
        self.thirds = thirds
        self.near_fissure = near_fissure
        spacing = grid.spacing
        self.step = np.maximum(1, np.rint(2.5 / spacing[::-1]).astype(int))  # (z, y, x) coarse step
        sz, sy, sx = self.step
        coarse = eligible[::sz, ::sy, ::sx] | (emphysema[::sz, ::sy, ::sx] > 0)
        lung_coarse = ndimage.binary_closing(coarse, iterations=1) | coarse
        self.pleura_mm = ndimage.distance_transform_edt(
            lung_coarse, sampling=(spacing[2] * sz, spacing[1] * sy, spacing[0] * sx)).astype(np.float32)

    def _depth(self, zyx: np.ndarray) -> np.ndarray:
        """Distance (mm) to the lung surface of voxel indices (n, 3), from the coarse map."""
        c = np.minimum(zyx // self.step, np.array(self.pleura_mm.shape) - 1)
        return self.pleura_mm[c[:, 0], c[:, 1], c[:, 2]]

    def candidates(self, subtype: str, third: int, count: int = 200_000) -> np.ndarray:
        """(n, 3) voxel indices where lesions of ``subtype`` may be centred in a third."""
        slices = np.flatnonzero(self.thirds == third)
        if not len(slices):
            return np.empty((0, 3), int)
        sub = self.eligible[slices[0]:slices[-1] + 1]
        flat = np.flatnonzero(sub)
        if len(flat) > 4 * count:
            flat = self.rng.choice(flat, 4 * count, replace=False)
        zyx = np.column_stack(np.unravel_index(flat, sub.shape))
        zyx[:, 0] += slices[0]
        depth = self._depth(zyx)
        if subtype == "centrilobular":
            keep = depth > 5.0
        elif subtype == "paraseptal":
            keep = (depth < 5.0) | self.near_fissure[zyx[:, 0], zyx[:, 1], zyx[:, 2]]
        elif subtype == "bullous":
            keep = depth < 12.0
        else:
            keep = np.ones(len(zyx), bool)
        if keep.sum() < 20:
            keep[:] = True
        zyx = zyx[keep]
        if len(zyx) > count:
            zyx = zyx[self.rng.choice(len(zyx), count, replace=False)]
        return zyx

    def _point(self, zyx) -> np.ndarray:
        xs, ys, zs = self.grid.axes
        return np.array([xs[zyx[2]], ys[zyx[1]], zs[zyx[0]]])

    def paint(self, center, axes, rotation, code: int, value: float) -> int:
        """Paint an ellipsoid (centre mm, semi-axes mm, 3x3 rotation); returns new lesion voxels."""
        xs, ys, zs = self.grid.axes
        reach = float(max(axes)) + self.grid.voxel
        box = []
        for axis, c in zip((xs, ys, zs), center):
            box.append((np.searchsorted(axis, c - reach), np.searchsorted(axis, c + reach, side="right")))
        (x0, x1), (y0, y1), (z0, z1) = box
        if x0 >= x1 or y0 >= y1 or z0 >= z1:
            return 0
        px = (xs[x0:x1] - center[0])[None, None, :]
        py = (ys[y0:y1] - center[1])[None, :, None]
        pz = (zs[z0:z1] - center[2])[:, None, None]
        total = 0.0
        for row, a in zip(rotation, axes):
            total = total + ((row[0] * px + row[1] * py + row[2] * pz) / a) ** 2
        inside = total <= 1.0
        em = self.emphysema[z0:z1, y0:y1, x0:x1]
        new = inside & self.eligible[z0:z1, y0:y1, x0:x1] & (em == 0)
        em[new] = code
        self.hu[z0:z1, y0:y1, x0:x1][new] = value
        return int(new.sum())

    def lesion(self, subtype: str, center_zyx, budget: int) -> int:
        """One lesion (or cluster) of ``subtype`` at a voxel; at most about ``budget`` voxels."""
        rng = self.rng
        code = SUBTYPE_CODES[subtype]
        c = self._point(center_zyx)
        vox_mm3 = float(np.prod(self.grid.spacing))
        cap_r = (3 * max(budget, 1) * vox_mm3 / (4 * np.pi)) ** (1 / 3) * 1.15
        lo, hi = LESION_HU[subtype]
        painted = 0
        if subtype == "centrilobular":
            for _ in range(rng.integers(3, 9)):
                r = min(1.0 + 4.0 * rng.uniform() ** 2, cap_r)
                painted += self._ellipsoid(c + rng.normal(0, 4.0, 3), r, code, rng.uniform(lo, hi))
        elif subtype == "panlobular":
            for _ in range(rng.integers(3, 6)):
                r = min(rng.uniform(6.0, 15.0), cap_r)
                painted += self._ellipsoid(c + rng.normal(0, 7.0, 3), r, code, rng.uniform(lo, hi))
        elif subtype == "paraseptal":
            painted += self._ellipsoid(c, min(rng.uniform(2.5, 5.0), cap_r), code, rng.uniform(lo, hi))
        else:
            painted += self._ellipsoid(c, min(rng.uniform(5.5, 20.0), cap_r), code, rng.uniform(lo, hi))
        return painted

    def _ellipsoid(self, center, radius, code, value) -> int:
        rng = self.rng
        axes = radius * rng.uniform(0.8, 1.2, 3)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        return self.paint(center, axes, q, code, value)

    def place(self, subtype: str, targets: list) -> list:
        """Reach ``targets`` (voxels per third, upper / middle / lower); returns what was painted."""
        done = [0, 0, 0]
        carry = 0
        for third in range(3):
            goal = targets[third] + carry
            if goal <= 0:
                continue
            sites = self.candidates(subtype, third)
            misses = 0
            while done[third] < goal and len(sites) and misses < 200:
                site = sites[self.rng.integers(len(sites))]
                if not self.eligible[tuple(site)] or self.emphysema[tuple(site)]:
                    misses += 1
                    continue
                gained = self.lesion(subtype, site, goal - done[third])
                misses = misses + 1 if gained == 0 else 0
                done[third] += gained
            carry = max(goal - done[third], 0)
        for third in range(3):  # room left anywhere takes what the zones could not hold
            if carry <= 0:
                break
            sites = self.candidates(subtype, third)
            misses = 0
            while carry > 0 and len(sites) and misses < 200:
                site = sites[self.rng.integers(len(sites))]
                gained = 0 if self.emphysema[tuple(site)] else self.lesion(subtype, site, carry)
                misses = misses + 1 if gained == 0 else 0
                done[third] += gained
                carry -= gained
        return done


def zone_targets(total_voxels: int, zones) -> list:
    """Split a voxel count over the three thirds by the zone weights."""
    weights = np.asarray(zones, float)
    weights = weights / weights.sum()
    counts = np.floor(total_voxels * weights).astype(int)
    counts[int(np.argmax(weights))] += total_voxels - counts.sum()
    return counts.tolist()


def default_zones(subtype: str, zones) -> tuple:
    return tuple(zones) if zones is not None else DEFAULT_ZONES[subtype]
