"""The fused extent of a tile as a differentiable function of its HU: what the ``emphysema``
explanation target explains for a pattern model with a ``fusion`` block (issue 25).

A fused model's extent is the lung mean of the fused map
``sigmoid(coefficients . features + intercept)`` (:mod:`~..model.pattern_fusion`), whose features
mix the pattern trunk's texture evidence with the local share of lung below -950 HU. Explaining
the fraction trunk instead (as before) explained a number the report no longer prints. Here the
same features are computed in torch on a tile (n, 1, P, P) HU at the model's pixel size (non-lung
at FILL_HU), so attributions cover both terms:

- texture terms come through the network, upsampled bilinearly from its stride as
  :meth:`~..model.pattern_infer.PatternPredictor._maps` does;
- the -950 HU threshold is a step, whose gradient is zero almost everywhere. It is replaced by
  ``sigmoid((-950 - HU) / SOFT_HU)`` (``SOFT_HU`` = 2 HU): integrated gradients and SmoothGrad then
  credit the voxels whose path crosses the threshold, and the value stays within the measured
  tolerance of the hard threshold (``Testing/explain/test_fused_target.py``). Occlusion needs no
  gradient and sees the same function.

Grad-CAM and Grad-CAM++ are layer methods: on this target they show the pattern trunk's share
(the texture term) only; integrated gradients, occlusion and SmoothGrad show both terms.

The window statistics are those of :func:`~..model.pattern_fusion.local_density` and
:func:`~..model.pattern_fusion.smoothed_in_lung` (zero padding, lung pixels only), computed
within the tile: near a tile's edge the 15 mm window sees less lung than on the whole image.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..model.pattern_fusion import EPS, LAA_EPS, LAA_HU, SMOOTH_MM, WINDOW_MM
from ..model.severity_net import normalise_hu
from ..model.tiles import LUNG_BELOW_HU

SOFT_HU = 2.0   # width of the soft -950 HU threshold (HU): the sigmoid's scale


def _logit(p: torch.Tensor, eps: float) -> torch.Tensor:
    p = p.clamp(eps, 1.0 - eps)
    return torch.log(p / (1.0 - p))


def _gaussian(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(n, 1, H, W) convolved with a separable Gaussian of SD ``sigma_px``, zero padding, the
    kernel scipy's ``gaussian_filter`` uses (radius 4 SD)."""
    radius = int(4.0 * sigma_px + 0.5)
    if radius < 1:
        return x
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    x = nn.functional.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, radius))
    return nn.functional.conv2d(x, kernel.view(1, 1, -1, 1), padding=(radius, 0))


def _box_mean(x: torch.Tensor, window_px: int) -> torch.Tensor:
    """(n, 1, H, W) mean over a ``window_px`` square (odd), zero padding: scipy's ``uniform_filter``
    with ``mode="constant"``."""
    return nn.functional.avg_pool2d(x, window_px, stride=1, padding=window_px // 2, count_include_pad=True)


def fused_features(x: torch.Tensor, lung: torch.Tensor, outputs: dict, names, pixel_mm: float,
                   window_mm: float = WINDOW_MM, soft_hu: float = SOFT_HU) -> torch.Tensor:
    """(F, n, 1, H, W) features ``names`` of HU tiles ``x`` (n, 1, H, W) with float ``lung``
    (n, 1, H, W); ``outputs`` the network's outputs for ``x`` (``pattern_map``, ``fraction_map``);
    ``soft_hu`` the soft threshold's width (0: the hard threshold)."""
    size = x.shape[-2:]
    cache = {}

    def up(maps):
        return nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)

    def below(hu):   # soft_hu 0: the hard threshold of the case's numpy code (no gradient)
        return torch.sigmoid((LAA_HU - hu) / soft_hu) if soft_hu > 0 else (hu < LAA_HU).to(hu.dtype)

    window_px = max(1, int(round(window_mm / pixel_mm)) // 2 * 2 + 1)
    n = _box_mean(lung, window_px)
    ok = n > 1e-6

    def share(low):
        return torch.where(ok, _box_mean(low * lung, window_px) / torch.where(ok, n, torch.ones_like(n)),
                           torch.zeros_like(n))

    def get(name):
        if name in cache:
            return cache[name]
        if name == "texture_logit":
            p_normal = up(torch.softmax(outputs["pattern_map"].float(), 1)[:, :1])
            value = _logit(1.0 - p_normal, EPS)
        elif name == "fraction_logit":
            value = _logit(up(outputs["fraction_map"][:, None].float()), EPS)
        elif name == "laa950_local":
            value = _logit(share(below(x)), LAA_EPS)
        elif name == "mean_hu_local":
            mean = torch.where(ok, _box_mean(x * lung, window_px) / torch.where(ok, n, torch.ones_like(n)),
                               torch.full_like(n, -900.0))
            value = (mean + 900.0) / 100.0
        elif name == "laa950_voxel":
            value = below(x)
        elif name == "laa950_voxel_x_texture":
            value = get("laa950_voxel") * get("texture_logit")
        elif name == "laa950_smooth_local":
            sigma = SMOOTH_MM / pixel_mm
            weight = _gaussian(lung, sigma)
            smooth = torch.where(lung > 0, _gaussian(x * lung, sigma) / weight.clamp_min(1e-6), x)
            value = _logit(share(below(smooth)), LAA_EPS)
        else:
            raise ValueError(f"unknown fusion feature {name!r}")
        cache[name] = value
        return value

    return torch.stack([get(name) for name in names])


class FusedExtent(nn.Module):
    """(n, 1, P, P) HU tiles -> (n,) fused extent of each tile (0-1: the lung mean of the fused
    map computed on the tile); ``net`` a :class:`~..model.pattern_net.PatternNet`, ``block`` its
    ``fusion`` block, ``pixel_mm`` the tiles' pixel size."""

    def __init__(self, net: nn.Module, block: dict, pixel_mm: float, soft_hu: float = SOFT_HU):
        super().__init__()
        self.net, self.block, self.pixel_mm, self.soft_hu = net, block, float(pixel_mm), float(soft_hu)
        self.window_mm = float(block.get("window_mm", WINDOW_MM))
        device = next(net.parameters()).device   # the network's (a CUDA model: the weights on CUDA too)
        self.register_buffer("weights", torch.tensor(block["coefficients"], dtype=torch.float32, device=device),
                             persistent=False)

    def forward(self, x: torch.Tensor, lung: torch.Tensor) -> torch.Tensor:
        if "fraction_logit" in self.block["features"]:
            outputs = self.net(x, lung)
        else:   # the pattern trunk alone: the fraction trunk does not feed this map
            outputs = {"pattern_map": self.net.pattern_head(self.net.features(normalise_hu(x)))}
        feats = fused_features(x, lung, outputs, self.block["features"], self.pixel_mm, self.window_mm, self.soft_hu)
        logit = (feats * self.weights.view(-1, *([1] * (feats.dim() - 1)))).sum(0) + float(self.block["intercept"])
        fused = torch.sigmoid(logit)
        return (fused * lung).sum(dim=(1, 2, 3)) / lung.sum(dim=(1, 2, 3)).clamp_min(1.0)


def tile_extents(net: nn.Module, block: dict, pixel_mm: float, images, batch: int = 64):
    """(n,) float32 fused extent of each HU tile of ``images`` (n, 1, P, P) (non-lung at
    FILL_HU), as the ``emphysema`` target sees it (no gradients)."""
    fused = FusedExtent(net, block, pixel_mm).eval()
    device = next(net.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch], np.float32)).to(device)
            out.append(fused(x, (x < LUNG_BELOW_HU).float()).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
