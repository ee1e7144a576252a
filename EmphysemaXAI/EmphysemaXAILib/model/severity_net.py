"""The severity CNN (seed 000's design at patch level): convolutions with spatial attention
inside each 2.5D lung patch, attention pooling over the patches of a case.

Shapes (B patches; a case is a bag of N patches):
- input patch: (B, S, P, P) float32, S adjacent axial slices as channels (2.5D), P pixels,
  HU normalised by :func:`normalise_hu`;
- :class:`PatchEncoder`: conv-BN-ReLU-pool blocks -> feature map F (B, C, P/8, P/8);
  spatial attention ``A = softmax(g(F))`` over the P/8 x P/8 positions, ``F_att = F * A``,
  summed over positions -> patch embedding (B, C); ``A`` is returned for display;
- patch heads: emphysema fraction (B,) in [0, 1] and subtype logits (B, 5: none + 4 subtypes);
- :class:`SeverityNet.case`: gated attention pooling (Ilse et al. 2018) of the N patch embeddings
  -> severity logits (4 classes of ``docs/severity.md``) and the attention weight of every patch;
  the case extent (% of lung) is the lung-weighted mean of the patch fractions.
"""
from __future__ import annotations

import torch
from torch import nn

HU_WINDOW = (-1100.0, 200.0)
N_SUBTYPES = 5   # none, centrilobular, panlobular, paraseptal, bullous
N_CLASSES = 4    # none, mild, moderate, severe


def normalise_hu(hu: torch.Tensor) -> torch.Tensor:
    """HU -> [0, 1] over the lung window (-1100..200 HU), clipped."""
    lo, hi = HU_WINDOW
    return ((hu - lo) / (hi - lo)).clamp(0.0, 1.0)


class SpatialAttention(nn.Module):
    """``A = softmax(g(F))`` over spatial positions (g: 1 x 1 convolution to one channel)."""

    def __init__(self, channels: int):
        super().__init__()
        self.g = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, H, W) -> (attended features (B, C, H, W), attention (B, H, W))."""
        b, _, h, w = features.shape
        attention = torch.softmax(self.g(features).view(b, h * w), dim=1).view(b, 1, h, w)
        return features * attention, attention[:, 0]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class PatchEncoder(nn.Module):
    """2.5D patch (B, S, P, P) -> embedding (B, C) and spatial attention (B, P/8, P/8)."""

    def __init__(self, slices: int = 3, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(_block(slices, width), _block(width, 2 * width), _block(2 * width, 4 * width))
        self.attention = SpatialAttention(4 * width)
        self.channels = 4 * width

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(patches)           # the last convolutional block (Grad-CAM target)
        attended, attention = self.attention(features)
        return attended.sum(dim=(2, 3)), attention


class SeverityNet(nn.Module):
    """Patch-level CNN with spatial attention and case-level attention pooling."""

    def __init__(self, slices: int = 3, width: int = 32, hidden: int = 64):
        super().__init__()
        self.encoder = PatchEncoder(slices, width)
        channels = self.encoder.channels
        self.fraction_head = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
        self.subtype_head = nn.Linear(channels, N_SUBTYPES)
        self.pool_v = nn.Linear(channels, hidden)
        self.pool_u = nn.Linear(channels, hidden)
        self.pool_w = nn.Linear(hidden, 1)
        self.class_head = nn.Linear(channels, N_CLASSES)

    def forward(self, patches: torch.Tensor) -> dict:
        """Patch outputs: ``fraction`` (B,), ``subtype_logits`` (B, 5), ``embedding`` (B, C),
        ``attention`` (B, P/8, P/8)."""
        embedding, attention = self.encoder(normalise_hu(patches))
        return {"fraction": torch.sigmoid(self.fraction_head(embedding))[:, 0],
                "subtype_logits": self.subtype_head(embedding), "embedding": embedding, "attention": attention}

    def case(self, patch_out: dict, lung_fraction: torch.Tensor) -> dict:
        """Case outputs from the N patches of one case: ``class_logits`` (4,), ``extent_pct``
        (scalar, % of lung), ``patch_weights`` (N,) of the attention pooling (sum 1)."""
        h = patch_out["embedding"]
        gate = torch.tanh(self.pool_v(h)) * torch.sigmoid(self.pool_u(h))
        weights = torch.softmax(self.pool_w(gate)[:, 0], dim=0)
        pooled = (weights[:, None] * h).sum(dim=0)
        lung = lung_fraction.clamp_min(1e-6)
        extent = 100.0 * (patch_out["fraction"] * lung).sum() / lung.sum()
        return {"class_logits": self.class_head(pooled), "extent_pct": extent, "patch_weights": weights}
