"""The pattern CNN: a fully convolutional 2D network with spatial attention that gives, for every
location of an axial lung image, the probabilities of the six parenchymal patterns of
:data:`~..analysis.patterns.PATTERNS` and the local emphysema fraction (seed 000's design, dense).

Shapes (B images of H x W pixels at the model's working pixel size, HU):
- input ``x`` (B, 1, H, W) float32 HU, normalised by :func:`~.severity_net.normalise_hu`; an optional
  ``lung`` (B, 1, H, W) mask (1 = lung; default: the whole image is lung);
- two trunks of the same design, each three blocks of two 3 x 3 conv-BN-ReLU (replicate
  padding), max pooling after the first two, receptive field 32 pixels (32 mm at 1 mm pixels,
  CIP's patches are about 20 mm wide): ``features`` -> ``F`` (B, C, H/4, W/4) for the patterns,
  learnt from the experts' labels only, and ``fraction_features`` -> ``G`` for the emphysema
  fraction, learnt from phantom truth and the real patches' densities. With one shared trunk the
  6-class accuracy on a held-out CIP fold fell from 0.78 (CIP alone) to 0.62; part of that was
  the phantoms moving the batch-norm statistics, which is why training passes phantom images
  through :meth:`fraction_only` and never through the pattern trunk;
- dense heads (1 x 1 convolutions): ``pattern_map`` logits (B, 6, H/4, W/4) on ``F`` and
  ``fraction_map`` in [0, 1] (B, H/4, W/4) on ``G``, the emphysema fraction around each position;
- spatial attention ``A = softmax(g(F))`` over the lung positions (B, H/4, W/4); the image's
  pattern logits are ``sum A * pattern_map`` (= the head applied to ``sum A * F``, the attended
  embedding, since the head is linear); the image's ``fraction`` is the lung-weighted mean of
  ``fraction_map`` (so a lung's extent is the mean of the map over the lung, whatever the tiling).
"""
from __future__ import annotations

import torch
from torch import nn

from ..analysis.patterns import PATTERNS
from .severity_net import normalise_hu

STRIDE = 4


def _block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, padding_mode="replicate", bias=False), nn.BatchNorm2d(cout),
              nn.ReLU(inplace=True),
              nn.Conv2d(cout, cout, 3, padding=1, padding_mode="replicate", bias=False), nn.BatchNorm2d(cout),
              nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


def _trunk(width: int) -> nn.Sequential:
    return nn.Sequential(_block(1, width, True), _block(width, 2 * width, True), _block(2 * width, 4 * width, False))


class PatternNet(nn.Module):
    """Dense pattern and emphysema-fraction CNN with spatial attention (module docstring)."""

    def __init__(self, width: int = 16, hidden: int = 32, fraction_width: int | None = None):
        super().__init__()
        fraction_width = fraction_width or width
        self.features = _trunk(width)
        self.fraction_features = _trunk(fraction_width)
        channels = 4 * width
        self.attention = nn.Conv2d(channels, 1, kernel_size=1)
        self.pattern_head = nn.Conv2d(channels, len(PATTERNS), kernel_size=1)
        self.fraction_head = nn.Sequential(nn.Conv2d(4 * fraction_width, hidden, 1), nn.ReLU(inplace=True),
                                           nn.Conv2d(hidden, 1, 1))
        self.channels = channels

    @staticmethod
    def lung_weights(lung: torch.Tensor | None, shape) -> torch.Tensor:
        """(B, 1, H, W) lung mask -> (B, H/4, W/4) share of lung pixels per position."""
        if lung is None:
            return torch.ones(shape[0], shape[2], shape[3])
        return nn.functional.adaptive_avg_pool2d(lung.float(), shape[2:])[:, 0]

    def fraction_only(self, x: torch.Tensor, lung: torch.Tensor | None = None) -> dict:
        """``fraction_map`` (B, h, w) and ``fraction`` (B,) from the fraction trunk alone (the
        pattern trunk and its batch-norm statistics untouched: phantom images in training)."""
        fraction_map = torch.sigmoid(self.fraction_head(self.fraction_features(normalise_hu(x)))[:, 0])
        weights = self.lung_weights(lung, fraction_map[:, None].shape).to(fraction_map.device)
        fraction = (fraction_map * weights).sum(dim=(1, 2)) / weights.sum(dim=(1, 2)).clamp_min(1e-6)
        return {"fraction_map": fraction_map, "fraction": fraction}

    def forward(self, x: torch.Tensor, lung: torch.Tensor | None = None) -> dict:
        """Outputs: ``pattern_logits`` (B, 6), ``fraction`` (B,), ``fraction_logit`` (B,)
        (logit of ``fraction``), ``pattern_map`` (B, 6, h, w), ``fraction_map`` (B, h, w),
        ``attention`` (B, h, w) summing to 1 over each image's lung positions, ``embedding``
        (B, C)."""
        features = self.features(normalise_hu(x))
        weights = self.lung_weights(lung, features.shape).to(features.device)
        b, _, h, w = features.shape
        score = self.attention(features)[:, 0].masked_fill(weights <= 0, float("-inf"))
        attention = torch.softmax(score.view(b, h * w), dim=1).view(b, h, w)
        attention = torch.nan_to_num(attention, nan=0.0)          # an image without lung
        pattern_map = self.pattern_head(features)
        fraction = self.fraction_only(x, lung)
        return {"pattern_logits": (pattern_map * attention[:, None]).sum(dim=(2, 3)), **fraction,
                "fraction_logit": torch.logit(fraction["fraction"].clamp(1e-6, 1 - 1e-6)),
                "pattern_map": pattern_map, "attention": attention,
                "embedding": (features * attention[:, None]).sum(dim=(2, 3))}
