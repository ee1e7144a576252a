"""A small synthetic chest CT the package writes itself (the demo and test sample).

Not the phantom generator (which has lobes, vessels, emphysema and exact truth): a plain chest
with body wall, two lungs, trachea, mediastinum, spine, table and a circular reconstruction
field of view, with Gaussian noise of a known SD, so that reading and quality control can be
exercised end to end with known answers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from ..volume import OUTSIDE_FOV_HU, CTVolume

SAMPLE_SHAPE = (48, 128, 128)        # (z, y, x)
SAMPLE_SPACING = (2.5, 2.5, 5.0)     # (x, y, z) mm


def make_sample_ct(seed: int = 0, shape=SAMPLE_SHAPE, spacing=SAMPLE_SPACING,
                   noise_hu: float = 20.0, blood_hu: float = 40.0, metal: bool = False) -> CTVolume:
    """Generate the sample chest CT.

    Args:
        seed: random seed (same seed, same volume).
        shape: (z, y, x) voxels; spacing: (x, y, z) mm. Axial, LPS identity direction: y grows
            toward posterior, z toward the head.
        noise_hu: SD of the added white Gaussian noise in HU (clipped at -1024 HU as
            scanners store it).
        blood_hu: HU of the heart and great vessels (about 40 plain, 200-400 with contrast).
        metal: add a small metal implant (3071 HU) in the spine.

    Returns:
        CTVolume in int16 HU with padding (-3024) outside a circular field of view.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    sx, sy, sz = spacing
    z = (np.arange(nz) - (nz - 1) / 2) * sz
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    hu = np.full(shape, -1000.0, dtype=np.float32)

    body_a, body_b = 150.0, 105.0  # semi-axes in mm (left-right, anterior-posterior)
    body = (X / body_a) ** 2 + (Y / body_b) ** 2 <= 1.0
    hu[body] = -100.0  # fat
    muscle = (X / (body_a - 12)) ** 2 + (Y / (body_b - 12)) ** 2 <= 1.0
    hu[muscle] = 40.0

    # Lungs: ellipsoids either side of the mediastinum, domed at the bottom (lower z).
    height = nz * sz * 0.8
    for side in (-1, 1):
        cx = side * 62.0
        ez = (Z - (-0.05 * nz * sz)) / (height / 2)
        lung = ((X - cx) / 48.0) ** 2 + ((Y + 5.0) / 72.0) ** 2 + ez ** 2 <= 1.0
        texture = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 1.0) * 40
        gravity = 25.0 * (Y + 72.0) / 144.0  # posterior (larger y) denser
        hu = np.where(lung, -870.0 + gravity + texture, hu)

    heart = ((X + 10) / 45.0) ** 2 + ((Y + 25) / 40.0) ** 2 + ((Z + 0.15 * nz * sz) / 45.0) ** 2 <= 1.0
    aorta = ((X - 5) ** 2 + (Y + 10) ** 2 <= 14.0 ** 2) & (Z > -0.15 * nz * sz)
    hu[heart | aorta] = blood_hu
    trachea = (X ** 2 + (Y + 20) ** 2 <= 9.0 ** 2) & (Z > 0.1 * nz * sz)
    hu[trachea] = -1000.0
    spine = (X ** 2 + (Y - 75.0) ** 2 <= 18.0 ** 2)
    hu[spine] = 700.0
    hu[(X ** 2 + (Y - 75.0) ** 2 <= 12.0 ** 2)] = 250.0  # marrow
    if metal:
        hu[(np.abs(Z) < 6) & (X ** 2 + (Y - 75.0) ** 2 <= 4.0 ** 2)] = 3071.0
    table = (Y > body_b + 8) & (Y < body_b + 16) & (np.abs(X) < 170)
    hu[table] = 200.0

    hu += rng.normal(0.0, noise_hu, shape).astype(np.float32)
    np.clip(hu, -1024.0, 3071.0, out=hu)  # the 12-bit range scanners store
    fov = X ** 2 + Y ** 2 <= (0.5 * min(nx * sx, ny * sy) - 1.0) ** 2
    hu[~fov] = OUTSIDE_FOV_HU
    origin = (float(x[0]), float(y[0]), float(z[0]))
    return CTVolume(hu=np.rint(hu).astype(np.int16), spacing=tuple(spacing), origin=origin,
                    direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), kind="array", modality="CT")


def write_sample_series(out_dir, seed: int = 0, **kwargs) -> Path:
    """Write the sample chest CT as a DICOM series into ``out_dir`` (returned)."""
    from ..io.dicom_write import write_dicom_series

    ct = make_sample_ct(seed=seed, **kwargs)
    write_dicom_series(ct.hu, out_dir, ct.spacing, ct.origin, ct.direction, seed=seed,
                       extra={"PixelPaddingValue": int(OUTSIDE_FOV_HU + 1024)})
    return Path(out_dir)
