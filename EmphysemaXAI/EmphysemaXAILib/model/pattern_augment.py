"""What differs between scanners, drawn at random for each training image (torch, batched).

Applied to clean source images resampled to the working pixel size, in acquisition order:
1. geometry (done by :func:`resample`): a random rotation by a multiple of 90 degrees, flips and a
   shift inside the source, and the source pixel size itself drawn in a range (CIP's patches
   store none; COPDGene's pixels are 0.6-0.75 mm);
2. resolution: the acquisition pixel (0.5-1.0 mm) and slice thickness (0.6-2.5 mm) as an in-plane
   Gaussian blur of the working image (a 2D image cannot be re-sliced: a thicker slice averages
   small structures away, which the blur imitates; stated as an approximation);
3. kernel: soft (an extra Gaussian blur), standard (none) or sharp (unsharp masking);
4. noise of 10-80 HU total SD (CT noise of the source counted as :data:`SOURCE_NOISE_HU`), its
   texture from the kernel: fine-grained for sharp kernels, blotchy for soft ones;
5. HU calibration drift: a linear map moving air (-1000 HU) by +-50 HU and water (0 HU) by
   +-30 HU (screening scanners have read air at -910 to -930 HU, field-facts.md: beyond this
   range, calibrate first: the case pipeline's air / blood calibration, ``patterns --air-hu``).
Only the image changes: the truth (labels, fractions) is that of the clean source.
:func:`center_resample` is step 1 without the randomness (inference, held-out scores).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..phantom.params import KERNELS

SOURCE_NOISE_HU = 20.0


@dataclass
class ScannerRanges:
    acquisition_pixel_mm: tuple = (0.5, 1.0)
    thickness_mm: tuple = (0.6, 2.5)
    noise_hu: tuple = (10.0, 80.0)
    air_shift_hu: tuple = (-50.0, 50.0)
    water_shift_hu: tuple = (-30.0, 30.0)
    kernels: tuple = KERNELS


DEFAULT_SCANNER_RANGES = ScannerRanges()


def resample(images: torch.Tensor, source_mm: torch.Tensor, out_mm: float, out_size: int,
             generator: torch.Generator, mode: str = "bilinear") -> tuple:
    """(n, c, H, W) source images with pixel sizes ``source_mm`` (n,) -> (n, c, out_size, out_size)
    at ``out_mm`` pixels: random 90-degree rotation, flips and shift (the output stays inside the
    source where it is large enough; the border is repeated otherwise); returns (images, the
    affine matrices (n, 2, 3) used, so masks can follow with the same geometry)."""
    n, _, h, w = images.shape
    scale = out_size * out_mm / (torch.as_tensor(source_mm, dtype=torch.float32) * w)      # (n,) of the half-width
    k = torch.randint(0, 4, (n,), generator=generator).float() * (math.pi / 2)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(k) * scale, torch.sin(k) * scale
    margin = (1.0 - scale).clamp_min(0.0)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * margin[:, None]
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    return _apply(images, theta, out_size, mode), theta


def _apply(images: torch.Tensor, theta: torch.Tensor, out_size: int, mode: str) -> torch.Tensor:
    grid = nn.functional.affine_grid(theta, (images.shape[0], images.shape[1], out_size, out_size), align_corners=False)
    return nn.functional.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)


def center_resample(images: torch.Tensor, source_mm: float, out_mm: float, out_size: int) -> torch.Tensor:
    """(n, 1, H, W) -> (n, 1, out_size, out_size): the centre of each image at ``out_mm`` pixels,
    no rotation (anti-aliased by a Gaussian blur when the output is coarser)."""
    if out_mm > source_mm:
        sigma = np.sqrt(out_mm ** 2 - source_mm ** 2) / np.sqrt(12.0) / source_mm
        images = gaussian_blur(images, torch.full((len(images),), float(sigma)))
    scale = out_size * out_mm / (source_mm * images.shape[-1])
    theta = torch.tensor([[scale, 0.0, 0.0], [0.0, scale, 0.0]]).expand(len(images), 2, 3)
    return _apply(images, theta, out_size, "bilinear")


def gaussian_blur(images: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) images, each blurred with its own Gaussian SD ``sigma_px`` (n,) pixels
    (0: unchanged); reflect padding."""
    sigma = torch.as_tensor(sigma_px, dtype=torch.float32).clamp_min(1e-3)
    radius = int(math.ceil(3 * float(sigma.max())))
    if radius < 1:
        return images
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x[None] / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)                                  # (n, k)
    n, _, h, w = images.shape
    padded = nn.functional.pad(images.transpose(0, 1), (radius, radius, radius, radius), mode="reflect")
    rows = nn.functional.conv2d(padded, kernel[:, None, None, :], groups=n)
    return nn.functional.conv2d(rows, kernel[:, None, :, None], groups=n).transpose(0, 1)


def _uniform(n, lo_hi, generator):
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def scanner_augment(images: torch.Tensor, pixel_mm: float, generator: torch.Generator,
                    ranges: ScannerRanges = DEFAULT_SCANNER_RANGES) -> torch.Tensor:
    """(n, 1, H, W) HU at ``pixel_mm`` -> the same images as another scanner would have made
    them (steps 2-5 of the module docstring)."""
    n = images.shape[0]
    acquisition = _uniform(n, ranges.acquisition_pixel_mm, generator)
    thickness = _uniform(n, ranges.thickness_mm, generator)
    sigma_mm = torch.sqrt((0.42 * acquisition) ** 2 + (0.2 * (thickness - ranges.thickness_mm[0])) ** 2)
    kernel = torch.randint(0, len(ranges.kernels), (n,), generator=generator)
    names = list(ranges.kernels)
    soft = kernel == names.index("soft") if "soft" in names else torch.zeros(n, dtype=torch.bool)
    sharp = kernel == names.index("sharp") if "sharp" in names else torch.zeros(n, dtype=torch.bool)
    sigma_mm = torch.where(soft, torch.sqrt(sigma_mm ** 2 + _uniform(n, (0.3, 0.8), generator) ** 2), sigma_mm)
    out = gaussian_blur(images, sigma_mm / pixel_mm)
    amount = torch.where(sharp, _uniform(n, (0.4, 1.2), generator), torch.zeros(n))
    if bool(sharp.any()):
        out = out + amount[:, None, None, None] * (out - gaussian_blur(out, torch.full((n,), 0.8 / pixel_mm)))
    target = _uniform(n, ranges.noise_hu, generator)
    extra = torch.sqrt((target ** 2 - SOURCE_NOISE_HU ** 2).clamp_min(0.0))
    grain = torch.where(sharp, 0.35, torch.where(soft, 0.9, 0.6)) / pixel_mm
    noise = gaussian_blur(torch.randn(images.shape, generator=generator), grain)
    noise = noise / noise.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None, None]
    out = out + extra[:, None, None, None] * noise
    air = _uniform(n, ranges.air_shift_hu, generator)
    water = _uniform(n, ranges.water_shift_hu, generator)
    slope = (1000.0 + water - air) / 1000.0
    return water[:, None, None, None] + slope[:, None, None, None] * out


def pleural_border(n: int, size: int, generator: torch.Generator, depth_px: tuple = (2.0, 7.0),
                   curvature: float = 0.06) -> torch.Tensor:
    """(n, 1, size, size) float mask, 1 = outside the lung: a synthetic chest wall along one
    random edge of each image, ``depth_px`` deep at its middle, its boundary a tilted parabola
    (``curvature`` per pixel at most: concave or convex like the pleura seen from inside or
    from a fissure's end). Training images get it set to the +200 HU fill the case pipeline puts
    outside the lung, with their label unchanged (a lung border alone is no emphysema)."""
    depth = _uniform(n, depth_px, generator)[:, None, None]
    bend = _uniform(n, (-curvature, curvature), generator)[:, None, None]
    tilt = _uniform(n, (-0.3, 0.3), generator)[:, None, None]
    centre = _uniform(n, (0.25 * size, 0.75 * size), generator)[:, None, None]
    rows = torch.arange(size, dtype=torch.float32)[None, :, None].expand(n, size, size)
    cols = torch.arange(size, dtype=torch.float32)[None, None, :].expand(n, size, size)
    boundary = depth + tilt * (cols - centre) + bend * (cols - centre) ** 2
    mask = (rows + 0.5 < boundary).float()[:, None]            # the wall along the top edge
    turns = torch.randint(0, 4, (n,), generator=generator)
    return torch.stack([torch.rot90(m, int(k), dims=(1, 2)) for m, k in zip(mask, turns)])
