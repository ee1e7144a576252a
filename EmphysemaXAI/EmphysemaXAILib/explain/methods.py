"""Attribution maps of the severity or pattern CNN for a batch of lung tiles (captum and MONAI).

Every method explains one output, the ``target``: ``emphysema`` (default), the logit of a tile's
predicted emphysema fraction (the quantity the case extent and class are built from: for a pattern
model with a ``fusion`` block, the tile's fused texture + density extent, :mod:`.fused_target`;
without one, its fraction trunk's), or, for a
pattern model (:class:`~..model.pattern_net.PatternNet`), the logit of one of its six patterns
(:data:`~..analysis.patterns.PATTERNS`, attention-pooled over the tile). Inputs are HU tiles
(n, S, P, P) as :mod:`..model.tiles` makes them (non-lung voxels at FILL_HU; S = 1 for the pattern
model); every map is (n, S, P, P) float32, positive where the voxel pushes the target up:

- ``gradcam``: Grad-CAM (Selvaraju et al. 2017) on the last convolutional block, at its last
  ReLU before the max-pool (P/4 x P/4 = 16 x 16 positions, 5.6 mm at 1.4 mm: measured on 3
  held-out phantoms against the pooled 8 x 8 output, top-k Dice 0.58 vs 0.55, deletion AUC 0.248
  vs 0.261 with a random order at 0.293), upsampled (same map on the S channels). Computed with a
  forward hook and ``torch.autograd.grad`` (:func:`grad_cam`), so it needs torch alone, as the
  Slicer module's default explanation must (issue 26); it equals captum's ``LayerGradCam(...,
  relu_attributions=True)``, which a test checks; ``gradcampp``: MONAI's GradCAMpp on the same
  layer (no per-tile normalisation);
- ``ig``: captum IntegratedGradients from a *normal-lung baseline* (every lung voxel at
  :data:`NORMAL_LUNG_HU`, non-lung unchanged), ``steps`` steps, internal batching;
- ``attention``: the model's own spatial attention ``A = softmax(g(F))``, upsampled;
- ``occlusion``: captum Occlusion with 3 x 8 x 8 windows replaced by normal lung;
- ``smoothgrad``: captum NoiseTunnel over Saliency (gradients averaged over noisy copies).

Each method imports only the package it uses (:data:`~..packages.METHOD_PACKAGES`): ``attention``
and ``gradcam`` need torch alone, ``gradcampp`` MONAI, the others captum.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..analysis.patterns import PATTERNS
from ..model.pattern_net import PatternNet
from ..model.severity_net import normalise_hu
from ..model.tiles import FILL_HU, LUNG_BELOW_HU
from ..options import EXPLAIN_METHODS, EXPLAIN_TARGETS
from ..packages import METHOD_PACKAGES
from .fused_target import FusedExtent

NORMAL_LUNG_HU = -860.0        # healthy parenchyma at full inspiration (the phantoms: -868 +/- 8)
METHODS = EXPLAIN_METHODS
EXPENSIVE = ("gradcampp", "ig", "occlusion", "smoothgrad")   # on the most-attended tiles only
TARGETS = EXPLAIN_TARGETS


def _is_pattern(model) -> bool:
    return isinstance(model, PatternNet)


def _trunk_name(model, target: str, fusion: dict | None = None) -> str:
    if not _is_pattern(model):
        return "encoder.features"
    if target == "emphysema" and not fusion:
        return "fraction_features"
    return "features"   # the trunk behind the target: a pattern, or a fused extent's texture term


def cam_layer_name(model, target: str = "emphysema", fusion: dict | None = None) -> str:
    """The Grad-CAM target in TargetLogit's naming: the last ReLU of the last block of the trunk
    that computes ``target``."""
    return f"net.{_trunk_name(model, target, fusion)}.2.5"


def cam_layer(model, target: str = "emphysema", fusion: dict | None = None) -> nn.Module:
    """The Grad-CAM target: the last ReLU of the last convolutional block of ``target``'s trunk
    (with a ``fusion`` block, the pattern trunk: the texture term of the fused extent)."""
    return model.get_submodule(_trunk_name(model, target, fusion))[-1][5]


class TargetLogit(nn.Module):
    """(n, S, P, P) HU -> (n, 1) logit of the tile's ``target`` (module docstring); ``fusion``
    (a pattern model's ``fusion`` block) and ``pixel_mm`` (the tiles' pixel size): the
    ``emphysema`` target is then the tile's fused extent (:class:`.fused_target.FusedExtent`)."""

    def __init__(self, model, target: str = "emphysema", fusion: dict | None = None, pixel_mm: float | None = None):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"unknown explanation target {target!r}; choose from {', '.join(TARGETS)}")
        if target != "emphysema" and not _is_pattern(model):
            raise ValueError(f"the severity model has no {target} output: explain a pattern with a pattern model")
        self.net, self.target = model, target
        self.fused = None
        if fusion and target == "emphysema" and _is_pattern(model):
            if pixel_mm is None:
                raise ValueError("a fused extent needs the tiles' pixel size (pixel_mm)")
            self.fused = FusedExtent(model, fusion, pixel_mm)

    def forward(self, x) -> torch.Tensor:
        if not _is_pattern(self.net):
            embedding, _ = self.net.encoder(normalise_hu(x))
            return self.net.fraction_head(embedding)
        lung = (x < LUNG_BELOW_HU).float()
        if self.fused is not None:
            return torch.logit(self.fused(x, lung).clamp(1e-6, 1 - 1e-6))[:, None]
        if self.target == "emphysema":
            # the fraction trunk alone: the pattern trunk does not feed this output, and running it
            # (with autograd keeping its activations) took about 60% of the time and memory;
            # the same operations as ``forward``'s ``fraction_logit``, so the same values
            fraction = self.net.fraction_only(x, lung)["fraction"]
            return torch.logit(fraction.clamp(1e-6, 1 - 1e-6))[:, None]
        return self.net(x, lung)["pattern_logits"][:, PATTERNS.index(self.target), None]


def _attention(model, x: torch.Tensor) -> torch.Tensor:
    """(n, h, w) spatial attention of either network."""
    with torch.no_grad():
        if _is_pattern(model):
            return model(x, (x < LUNG_BELOW_HU).float())["attention"]
        return model.encoder(normalise_hu(x))[1]


def normal_lung_baseline(tiles: torch.Tensor) -> torch.Tensor:
    """The tiles with every lung voxel (below FILL_HU) at NORMAL_LUNG_HU."""
    return torch.where(tiles < FILL_HU - 0.5, torch.full_like(tiles, NORMAL_LUNG_HU), tiles)


def _upsample(maps: torch.Tensor, shape) -> torch.Tensor:
    """(n, 1, h, w) -> (n, S, P, P) by bilinear upsampling, repeated over the S channels."""
    up = nn.functional.interpolate(maps, size=shape[-2:], mode="bilinear", align_corners=False)
    return up.expand(-1, shape[1], -1, -1)


def grad_cam(wrapper: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of ``wrapper``'s single output (n, 1) for inputs ``x`` (n, S, P, P) at ``layer``
    (a module inside ``wrapper``): ReLU(sum_c mean_hw(d out / d A_c) * A_c), (n, 1, h, w) at the
    layer's resolution; the definition captum's LayerGradCam uses with ``relu_attributions``."""
    captured = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        with torch.enable_grad():
            out = wrapper(x)[:, 0]
            activations = captured[-1]
            gradients = torch.autograd.grad(out.sum(), activations)[0]   # tiles are independent in eval mode
    finally:
        handle.remove()
    weights = gradients.mean(dim=tuple(range(2, gradients.dim())), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1, keepdim=True)).detach()


def attribute(model, tiles: np.ndarray, method: str, *, steps: int = 32, batch: int = 64,
              internal_batch: int = 256, seed: int = 0, target: str = "emphysema", fusion: dict | None = None,
              pixel_mm: float | None = None) -> np.ndarray:
    """(n, S, P, P) float32 map of ``method`` for the HU ``tiles`` and ``target``; model in eval
    mode. ``attention`` is the model's own map, the same whatever the target. ``fusion`` /
    ``pixel_mm``: as :class:`TargetLogit`."""
    out = [maps for _, maps in attribute_batches(model, tiles, method, steps=steps, batch=batch,
                                                 internal_batch=internal_batch, seed=seed, target=target,
                                                 fusion=fusion, pixel_mm=pixel_mm)]
    return np.concatenate(out) if out else np.zeros((0,) + tiles.shape[1:], np.float32)


def attribute_batches(model, tiles: np.ndarray, method: str, *, steps: int = 32, batch: int = 64,
                      internal_batch: int = 256, seed: int = 0, target: str = "emphysema",
                      fusion: dict | None = None, pixel_mm: float | None = None):
    """:func:`attribute` one batch at a time: yields (index of the batch's first tile, (b, S, P, P)
    float32 maps), so a caller can use each batch's maps and drop them (a whole case's maps are
    never held at once); the same maps as :func:`attribute`."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
    # only the package this method uses (attention: torch alone); ImportError names a missing one
    if METHOD_PACKAGES[method] == "captum":
        from captum import attr
    elif METHOD_PACKAGES[method] == "monai":
        from monai.visualize import GradCAMpp
    model.eval()
    wrapper = TargetLogit(model, target, fusion, pixel_mm).eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    for start in range(0, len(tiles), batch):
        x = torch.from_numpy(np.ascontiguousarray(tiles[start:start + batch], np.float32)).to(device)
        if method == "gradcam":
            maps = _upsample(grad_cam(wrapper, cam_layer(model, target, fusion), x), x.shape)
        elif method == "gradcampp":
            cam = GradCAMpp(wrapper, target_layers=cam_layer_name(model, target, fusion), postprocessing=lambda m: m)
            # one tile per call: MONAI 1.6's GradCAMpp multiplies the (n,) score into (n, C, h, w)
            # gradients, which only broadcasts for n = 1
            maps = torch.cat([cam(x[i:i + 1], class_idx=0) for i in range(len(x))]).expand(-1, x.shape[1], -1, -1)
        elif method == "ig":
            ig = attr.IntegratedGradients(wrapper)
            maps = ig.attribute(x, baselines=normal_lung_baseline(x), target=0, n_steps=steps,
                                internal_batch_size=internal_batch)
        elif method == "attention":
            maps = _upsample(_attention(model, x)[:, None], x.shape)
        elif method == "occlusion":
            maps = attr.Occlusion(wrapper).attribute(x, sliding_window_shapes=(x.shape[1], 8, 8),
                                                     strides=(x.shape[1], 8, 8), baselines=normal_lung_baseline(x),
                                                     target=0)
        else:  # smoothgrad
            maps = attr.NoiseTunnel(attr.Saliency(wrapper)).attribute(x, nt_type="smoothgrad", nt_samples=8,
                                                                      stdevs=20.0, target=0, abs=False)
        lung = (x < FILL_HU - 0.5).float()
        yield start, (maps.detach().float() * lung).cpu().numpy().astype(np.float32, copy=False)
        del x, maps, lung
