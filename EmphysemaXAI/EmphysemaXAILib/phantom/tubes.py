"""Tubular structures of the phantom: airways, aorta and branching pulmonary vessel trees.

A tube is a chain of straight segments with linearly changing radius; it is rasterised with
partial volume: the fraction of a voxel inside the tube is ``clip((r - d) / voxel + 0.5, 0, 1)``
for a voxel centre at distance ``d`` from the segment axis. Vessel trees grow from each hilum
into their lobe by territory splitting (see :func:`vessel_trees`) until the radius falls below
the smallest vessel drawn.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.regions import LOBE_CODES

#: Where the trunks of each lobe start, relative to its lobar bronchus end (mm).
TREE_ROOT_OFFSETS = (np.array([0.0, -5.0, 4.0]), np.array([0.0, 6.0, -6.0]))


@dataclass
class Segment:
    p0: np.ndarray  # start (x, y, z) mm, LPS
    p1: np.ndarray  # end
    r0: float       # radius at the start, mm
    r1: float       # radius at the end, mm


class Grid:
    """Voxel centres of a (z, y, x) grid centred on the origin, in LPS mm."""

    def __init__(self, shape, spacing):
        self.shape = tuple(shape)
        self.spacing = np.asarray(spacing, float)
        nz, ny, nx = shape
        self.axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip((nx, ny, nz), self.spacing)]
        self.voxel = float(np.prod(self.spacing) ** (1 / 3))

    def index(self, point) -> tuple:
        """(z, y, x) integer index nearest to an (x, y, z) point (may lie outside the grid)."""
        ijk = np.rint(np.asarray(point) / self.spacing + (np.array(self.shape[::-1]) - 1) / 2).astype(int)
        return int(ijk[2]), int(ijk[1]), int(ijk[0])

    def contains(self, zyx) -> bool:
        return all(0 <= i < n for i, n in zip(zyx, self.shape))


def rasterize(segments, grid: Grid, out: np.ndarray) -> None:
    """Max-composite the partial-volume fraction of each segment into ``out`` (z, y, x) float32."""
    xs, ys, zs = grid.axes
    for seg in segments:
        reach = max(seg.r0, seg.r1) + grid.voxel
        lo = np.minimum(seg.p0, seg.p1) - reach
        hi = np.maximum(seg.p0, seg.p1) + reach
        box = []
        for axis, a, b in zip((xs, ys, zs), lo, hi):
            i0, i1 = np.searchsorted(axis, a), np.searchsorted(axis, b, side="right")
            box.append((i0, i1))
        (x0, x1), (y0, y1), (z0, z1) = box
        if x0 >= x1 or y0 >= y1 or z0 >= z1:
            continue
        d = seg.p1 - seg.p0
        length2 = float(d @ d) or 1e-9
        px = (xs[x0:x1] - seg.p0[0])[None, None, :]
        py = (ys[y0:y1] - seg.p0[1])[None, :, None]
        pz = (zs[z0:z1] - seg.p0[2])[:, None, None]
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / length2, 0.0, 1.0)
        dist2 = (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2
        radius = seg.r0 + t * (seg.r1 - seg.r0)
        frac = np.clip((radius - np.sqrt(dist2)) / grid.voxel + 0.5, 0.0, 1.0).astype(np.float32)
        view = out[z0:z1, y0:y1, x0:x1]
        np.maximum(view, frac, out=view)


def chain(points, radii) -> list:
    """Segments through consecutive points (mm) with the given radius at each point."""
    pts = [np.asarray(p, float) for p in points]
    return [Segment(pts[i], pts[i + 1], radii[i], radii[i + 1]) for i in range(len(pts) - 1)]


def airway_tree(geometry: dict, z_top: float, rng) -> tuple:
    """Trachea, main and lobar bronchi as (lumen segments, wall segments, lobar ends by lobe)."""
    carina = geometry["carina"]
    hila = geometry["hila"]
    lumen, wall = [], []

    def tube(points, r_lumen, r_wall):
        lumen.extend(chain(points, r_lumen))
        wall.extend(chain(points, [r + w for r, w in zip(r_lumen, r_wall)]))

    r_tr = rng.uniform(7.5, 9.5)
    tube([[0, carina[1], z_top + 5], carina], [r_tr, r_tr], [2.0, 2.0])
    ends = {}
    for code, side in ((1, -1), (2, 1)):
        hilum = hila[code]
        r_main = rng.uniform(5.0, 6.0) if code == 1 else rng.uniform(4.5, 5.5)
        tube([carina, hilum], [r_main, r_main * 0.9], [1.6, 1.5])
        lateral = np.array([side, 0.0, 0.0])
        if code == 1:
            targets = {"rul": hilum + 28 * lateral + np.array([0, -4, 30]),
                       "rml": hilum + 22 * lateral + np.array([0, -32, -22]),
                       "rll": hilum + 14 * lateral + np.array([0, 20, -38])}
        else:
            targets = {"lul": hilum + 26 * lateral + np.array([0, -16, 24]),
                       "lll": hilum + 14 * lateral + np.array([0, 20, -38])}
        for lobe, end in targets.items():
            r = rng.uniform(3.0, 4.0)
            tube([hilum, end], [r, r * 0.85], [1.2, 1.1])
            ends[lobe] = end
    return lumen, wall, ends


def aorta(geometry: dict, anatomy, z_bottom: float, rng) -> list:
    """Ascending aorta, arch and descending aorta (radius about 14 mm) as segments."""
    hx, hy, hz, ha, hb, hc = anatomy.heart
    r = rng.uniform(12.5, 15.0)
    y_desc = geometry["y_spine"] - 24.0
    top = geometry["carina"][2] + rng.uniform(25.0, 40.0)
    points = [[hx - 22, hy + 10, hz + 0.3 * hc], [-8, -22, top - 10], [2, -14, top + 4],
              [16, 2, top], [20, y_desc, top - 20], [20, y_desc, z_bottom - 5]]
    return chain(points, [r * 1.05, r, r, r * 0.95, r * 0.85, r * 0.8])


def vessel_trees(lobes: np.ndarray, grid: Grid, roots: dict, rng, r_min: float) -> list:
    """Vessel trees of each lobe growing from ``roots`` (lobe name -> point mm).

    Each tree owns the points of its lobe as its territory; at every branching the territory is
    split in two across its longest axis (slightly tilted at random), each daughter heads for
    the centre of its half with a radius by Murray's law, ``r_child = r * (n_child / n) ** (1/3)``.
    This fills the lobe like real pulmonary trees do. Two trees (artery, vein) per lobe.
    """
    segments = []
    for name, root in roots.items():
        code = LOBE_CODES[name]
        points = _lobe_points(lobes, code, grid, rng)
        if len(points) < 50:
            continue
        for offset in TREE_ROOT_OFFSETS:
            r0 = rng.uniform(4.0, 5.0)
            _grow(root + offset, r0, points, lobes, code, grid, rng, r_min, segments)
    return segments


def _lobe_points(lobes, code, grid: Grid, rng, count: int = 4000) -> np.ndarray:
    step = max(1, int(round(3.0 / grid.spacing.min())))
    sub = lobes[::step, ::step, ::step] == code
    idx = np.argwhere(sub) * step
    if len(idx) > count:
        idx = idx[rng.choice(len(idx), count, replace=False)]
    xs, ys, zs = grid.axes
    return np.stack([xs[idx[:, 2]], ys[idx[:, 1]], zs[idx[:, 0]]], axis=1)


def _inside(point, lobes, code, grid: Grid) -> bool:
    zyx = grid.index(point)
    return grid.contains(zyx) and lobes[zyx] == code


def _grow(p, r, territory, lobes, code, grid, rng, r_min, segments, depth=0):
    """One branch toward the centre of its territory, then two daughters over its halves."""
    target = territory.mean(axis=0)
    v = target - p
    dist = float(np.linalg.norm(v))
    if dist < 1e-6:
        return
    fraction = 1.0 if len(territory) < 4 else rng.uniform(0.45, 0.7)
    q = p + v * fraction
    for _ in range(3):  # keep the branch inside its lobe
        if _inside(q, lobes, code, grid):
            break
        q = p + (q - p) * 0.5
    else:
        return
    r_end = r * 0.97
    segments.append(Segment(p, q, r, r_end))
    if len(territory) < 4 or r_end < r_min or depth > 30:
        return
    centred = territory - target
    axis = np.linalg.eigh(centred.T @ centred)[1][:, -1] + rng.normal(0, 0.25, 3)
    side = centred @ axis > 0
    for half in (territory[side], territory[~side]):
        if len(half):
            r_child = r_end * (len(half) / len(territory)) ** (1 / 3)
            _grow(q, r_child, half, lobes, code, grid, rng, r_min, segments, depth + 1)
