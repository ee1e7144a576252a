"""The phantom's acquisition: reconstruction kernel (edges and noise texture) and dose (noise).

Noise is white Gaussian noise filtered in-plane (correlated like CT noise: smooth for a soft
kernel, fine-grained for a sharp one, with a little correlation along z), scaled to the SD of
the dose and kernel. Values are clipped to the 12-bit range scanners store (-1024..3071 HU)
and the corners outside the circular reconstruction field of view are padding (-3024 HU).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..volume import OUTSIDE_FOV_HU
from .params import DOSE_NOISE_HU, KERNEL_SETTINGS


def noise_sd(params, rng) -> float:
    """Noise SD (HU) of the acquisition: the dose's range times the kernel factor."""
    if params.noise_hu is not None:
        return float(params.noise_hu)
    lo, hi = DOSE_NOISE_HU[params.dose]
    return float(rng.uniform(lo, hi) * KERNEL_SETTINGS[params.kernel][0])


def correlated_noise(shape, kernel: str, rng) -> np.ndarray:
    """Unit-SD noise (float32, z, y, x) with the in-plane texture of ``kernel``."""
    sigma = KERNEL_SETTINGS[kernel][1]
    white = rng.standard_normal(shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(white, (0.35, sigma, sigma), truncate=3.0)
    if kernel == "sharp":  # band-pass: remove part of the low frequencies, as edge kernels do
        noise -= 0.55 * ndimage.gaussian_filter(noise, (0.0, 2.0, 2.0), truncate=3.0)
    del white
    sample = noise[:: max(1, shape[0] // 16)]
    noise /= np.float32(sample.std() or 1.0)
    return noise


def acquire(ideal: np.ndarray, spacing, params, rng, sd: float) -> np.ndarray:
    """The scanner's image (int16 HU) of a noise-free ``ideal`` volume (float32, z, y, x)."""
    edge = KERNEL_SETTINGS[params.kernel][2]
    if edge == "blur":
        image = ndimage.gaussian_filter(ideal, (0.0, 0.6, 0.6), truncate=3.0)
    elif edge == "sharpen":
        image = ideal + 0.6 * (ideal - ndimage.gaussian_filter(ideal, (0.0, 1.0, 1.0), truncate=3.0))
    else:
        image = ideal.copy()
    if sd > 0:
        noise = correlated_noise(ideal.shape, params.kernel, rng)
        noise *= np.float32(sd)
        image += noise
        del noise
    np.clip(image, -1024.0, 3071.0, out=image)
    nz, ny, nx = ideal.shape
    yy = (np.arange(ny) - (ny - 1) / 2) * spacing[1]
    xx = (np.arange(nx) - (nx - 1) / 2) * spacing[0]
    radius = 0.5 * min(nx * spacing[0], ny * spacing[1]) - spacing[0]
    outside = (xx[None, :] ** 2 + yy[:, None] ** 2) > radius ** 2
    out = np.rint(image).astype(np.int16)
    out[:, outside] = OUTSIDE_FOV_HU
    return out
