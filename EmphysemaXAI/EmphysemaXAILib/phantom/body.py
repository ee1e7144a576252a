"""The phantom's torso, lungs, lobes, fissures, heart, spine, ribs and table, slice by slice.

Every structure is an implicit shape in LPS millimetres (volume centred on 0; x to the left,
y posterior, z up), evaluated on each axial slice, so memory stays at a few slice-sized arrays
plus the outputs. HU: fat -100, muscle 40, blood / heart 40, liver 55, mediastinal fat -90,
vertebral cortex 800 / marrow 250, ribs 600, sternum 450, table 150, air -1000, lung
parenchyma ``anatomy.parenchyma_hu`` with a gravity gradient (texture is added later).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .params import Anatomy

FISSURE_TISSUE_MM = 0.3  # tissue thickness of a fissure (sets its partial-volume brightness)


@dataclass
class Torso:
    """Outputs on the (z, y, x) grid."""

    hu: np.ndarray            # float32 HU without texture, trees, lesions or noise
    lungs: np.ndarray         # uint8: 1 right lung region, 2 left (airways not yet removed)
    lobes: np.ndarray         # uint8 LTRCLobes codes (1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL)
    fissure: np.ndarray       # bool: voxels the fissures made denser (not lesion-eligible)
    near_fissure: np.ndarray  # bool: lung voxels within 4 mm of a fissure (paraseptal sites)
    geometry: dict            # reference points used by the trees (hila, carina, spine ...)


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def build_torso(shape, spacing, an: Anatomy, table: bool = True) -> Torso:
    """Evaluate the anatomy on a (z, y, x) grid with ``spacing`` (x, y, z) mm."""
    nz, ny, nx = shape
    sx, sy, sz = spacing
    xs = (np.arange(nx) - (nx - 1) / 2) * sx
    ys = (np.arange(ny) - (ny - 1) / 2) * sy
    zs = (np.arange(nz) - (nz - 1) / 2) * sz
    X, Y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    hu = np.empty(shape, np.float32)
    lungs = np.zeros(shape, np.uint8)
    lobes = np.zeros(shape, np.uint8)
    fissure = np.zeros(shape, bool)
    near_fissure = np.zeros(shape, bool)

    wall = an.fat_mm + an.muscle_mm + 5.0
    cy = 3.0
    z_low = an.z_apex - an.lung_height
    hx, hy, hz, ha, hb, hc = an.heart
    voxel = max(sx, sy, sz)
    fissure_hu = 1080.0 * min(1.0, FISSURE_TISSUE_MM / voxel)
    slope = an.oblique_slope
    z_h = z_low + an.horizontal_offset * an.lung_height
    geometry = {"cy": cy, "z_low": z_low, "wall": wall}

    for k, z in enumerate(zs):
        frac = (z - zs[0]) / max(zs[-1] - zs[0], 1.0)
        a = an.body_a * (0.95 + 0.05 * np.sin(np.pi * frac))
        b = an.body_b * (0.96 + 0.04 * np.sin(np.pi * frac))
        ca, cb = a - wall, b - wall
        r_body = (X / a) ** 2 + (Y / b) ** 2
        r_inner = (X / (a - an.fat_mm)) ** 2 + (Y / (b - an.fat_mm)) ** 2
        r_cavity = (X / ca) ** 2 + ((Y - cy) / cb) ** 2
        s = np.full(X.shape, -1000.0, np.float32)
        s[r_body <= 1] = -100.0
        s[r_inner <= 1] = 40.0
        cavity = r_cavity <= 1
        s[cavity] = -90.0  # mediastinal fat until something else claims the voxel

        # Diaphragm: domes over a posterior-deeper base; below it, liver / abdomen.
        base = z_low + 15.0 * (cb - (Y - cy)) / (2 * cb)
        dome_r = np.clip(1 - ((X + ca / 2) / (0.55 * ca)) ** 2 - ((Y - cy) / (0.9 * cb)) ** 2, 0, 1)
        dome_l = np.clip(1 - ((X - ca / 2) / (0.55 * ca)) ** 2 - ((Y - cy) / (0.9 * cb)) ** 2, 0, 1)
        dia = np.where(X < 0, base + (an.dome_mm + an.right_dome_extra) * dome_r, base + an.dome_mm * dome_l)
        below = cavity & (z < dia)
        s[below] = np.where(X[below] < 10, 55.0, 45.0)

        # Heart (with pericardial fat around it).
        rh = ((X - hx) / ha) ** 2 + ((Y - hy) / hb) ** 2 + ((z - hz) / hc) ** 2
        heart = cavity & (rh <= 1) & ~below
        s[heart] = 40.0
        heart_zone = rh <= 1.25

        # Spine: vertebral body (cortex, marrow, discs), canal, spinous process.
        y_v = cy + cb - 20.0
        rv = np.hypot(X, Y - y_v)
        disc = (z % 27.0) < 5.0
        s[rv <= 17.0] = 800.0
        s[rv <= 15.0] = 80.0 if disc else 250.0
        s[(np.abs(X) < 9) & (Y > y_v + 17) & (Y < y_v + 55) & (r_body <= 1)] = 600.0
        s[np.hypot(X, Y - (y_v + 27)) <= 7.5] = 20.0
        spine_zone = rv <= 22.0

        # Mediastinum half-width: narrow at the anterior junction, wider behind.
        t = _smoothstep((Y - (cy - 0.6 * cb)) / (0.35 * cb))
        half = an.junction_gap_mm + (an.mediastinum_mm - an.junction_gap_mm) * t
        t_apex = np.clip((an.z_apex - z) / an.apex_taper_mm, 0, 1)
        taper = np.sqrt(t_apex * (2 - t_apex))  # a rounded apex
        lung_any = cavity & ~below & ~heart_zone & ~spine_zone & (z < an.z_apex)
        for side, code in ((-1, 1), (1, 2)):
            xc = side * 0.5 * ca
            lobe_shape = ((X - xc) / (0.62 * ca * taper + 1e-6)) ** 2 + ((Y - cy) / (cb * taper + 1e-6)) ** 2 <= 1
            region = lung_any & lobe_shape & ((side * X) > half)
            if not region.any():
                continue
            lungs[k][region] = code
            gravity = an.gravity_hu * np.clip((Y[region] - (cy - cb)) / (2 * cb), 0, 1)
            s[region] = an.parenchyma_hu + gravity
            # Lobes: oblique fissure (lower lobe below / behind it); right horizontal fissure.
            wave = 4.0 * np.sin(X[region] / 35.0 + an.fissure_phase[code - 1])
            z_f = z_low + 0.45 * an.lung_height + slope * (Y[region] - cy) + wave
            d_o = (z - z_f) / np.sqrt(1 + slope ** 2)
            lower = d_o < 0
            dist = np.abs(d_o)
            if code == 1:
                d_h = np.where(lower, np.inf, np.abs(z - z_h))
                codes = np.where(lower, 5, np.where(z < z_h, 4, 3))
                dist = np.minimum(dist, d_h)
            else:
                codes = np.where(lower, 2, 1)
            lobes[k][region] = codes
            inc = fissure_hu * np.clip(1 - dist / voxel, 0, 1)
            s[region] += inc
            fissure[k][region] = inc > 0.5
            near_fissure[k][region] = dist < 4.0

        # Ribs in the muscle ring: 12 per side, sloping down toward the front.
        ring = (r_inner <= 1) & (r_cavity > 1)
        phi = np.arctan2(np.abs(X), Y - cy)
        rho = np.sqrt((X / (a - an.fat_mm - an.muscle_mm / 2 - 3)) ** 2
                      + (Y / (b - an.fat_mm - an.muscle_mm / 2 - 3)) ** 2)
        rib_site = ring & (phi > 0.12 * np.pi) & (phi < 0.82 * np.pi) & (np.abs(rho - 1) * ca < 4.5)
        if rib_site.any():
            drop = 55.0 * (1 - np.cos(phi[rib_site])) / 2
            hit = np.zeros(drop.shape, bool)
            for i in range(12):
                hit |= np.abs(z - (an.z_apex + 18.0 - 23.0 * i - drop)) < 5.0
            s.reshape(-1)[np.flatnonzero(rib_site)[hit]] = 600.0
        # Sternum.
        if hz - 60 < z < an.z_apex - 25:
            s[(np.abs(X) < 14) & (Y < -(b - an.fat_mm - 14)) & (r_inner <= 1)] = 450.0
        if table:
            s[(Y > an.body_b + 8) & (Y < an.body_b + 16) & (np.abs(X) < 0.9 * an.body_a)] = 150.0
        hu[k] = s

    geometry.update(
        y_spine=cy + (an.body_b - wall) - 20.0,
        carina=np.array([0.0, cy - 5.0, z_low + 0.62 * an.lung_height]),
        hila={1: np.array([-0.28 * (an.body_a - wall), cy, z_low + 0.52 * an.lung_height]),
              2: np.array([0.28 * (an.body_a - wall), cy, z_low + 0.52 * an.lung_height])},
        z_h=z_h)
    return Torso(hu=hu, lungs=lungs, lobes=lobes, fissure=fissure, near_fissure=near_fissure,
                 geometry=geometry)
