"""2.5D zone patches of a case, as the seeds (001, 004) cut them for their embeddings.

The lung's z-extent (the axial slices holding any lung voxel) is split into upper / middle /
lower thirds by slice count, superior to inferior. In each third the **centre slice** is taken,
with its two neighbours, as a 3-channel image: the centre rather than the slice with the most
lung, because the centre sits at the same relative height in every case (a fixed anatomical
level, so zone embeddings are comparable across cases), while the slice with the most lung
drifts toward the zone boundary nearest the lung's widest part (the lower zone's toward the
middle zone). If the centre slice holds no lung (an unusual mask), the nearest slice of the
zone that does is used.

Channels are ordered foot to head (channel 0 is the most inferior slice), which for the usual
orientation (a larger z index nearer the head) is (centre - 1, centre, centre + 1).

Pixels: HU clipped to [-1000, 400] and mapped linearly to [0, 1] (the seeds' clip then min-max,
with the window's fixed ends as min and max, so the mapping is the same for every case).
Each zone image is cropped to the bounding box of the lung in its three slices plus a margin, at
native in-plane resolution (no resampling), so the three zones usually differ in size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.regions import THIRDS
from ..errors import InputError

HU_CLIP = (-1000.0, 400.0)


def window(hu: np.ndarray) -> np.ndarray:
    """HU -> float32 in [0, 1]: clip to :data:`HU_CLIP`, then (HU + 1000) / 1400."""
    lo, hi = HU_CLIP
    return ((np.clip(np.asarray(hu, np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


@dataclass
class ZonePatches:
    """The three zone patches of one case (upper, middle, lower, in that order).

    Attributes:
        images: 3 arrays (3, H_k, W_k) float32 in [0, 1] (windowed HU; channel 0 most inferior).
        hu: the same crops in HU, float32, unclipped (for backbones that take HU).
        lung: the same crops of the lung mask, bool.
        slices: (3, 3) int, the z indices of each zone's channels.
        boxes: (3, 4) int, each crop's (y0, y1, x0, x1) on the CT grid (end exclusive).
        spacing: in-plane pixel size (x, y) in mm.
        zones: the zone names, ``("upper", "middle", "lower")``.
    """

    images: list
    hu: list
    lung: list
    slices: np.ndarray
    boxes: np.ndarray
    spacing: tuple
    zones: tuple = THIRDS


def zone_centres(lung: np.ndarray, superior_is_high_index: bool = True) -> list:
    """Centre slice index of the upper, middle and lower third of the lung's z-extent.

    Args:
        lung: (z, y, x) bool whole-lung mask.
        superior_is_high_index: True when a larger z index is nearer the head.
    Returns:
        three z indices, superior to inferior (each holds lung).
    """
    counts = lung.reshape(lung.shape[0], -1).sum(axis=1)
    present = np.flatnonzero(counts)
    if present.size == 0:
        raise InputError("the lung mask is empty: no zone patches; check the segmentation")
    extent = np.arange(present[0], present[-1] + 1)
    if extent.size < 3:
        raise InputError(f"the lung spans {extent.size} axial slice(s); zone patches need at least 3")
    if superior_is_high_index:
        extent = extent[::-1]
    centres = []
    for k in range(3):
        zone = extent[k * extent.size // 3:(k + 1) * extent.size // 3]
        centre = zone[len(zone) // 2]
        if counts[centre] == 0:
            with_lung = zone[counts[zone] > 0]
            centre = with_lung[np.argmin(np.abs(with_lung - centre))] if with_lung.size else centre
        centres.append(int(centre))
    return centres


def zone_patches(ct, labels: np.ndarray, margin_mm: float = 10.0) -> ZonePatches:
    """Cut the three 2.5D zone patches of a case (see the module docstring).

    Args:
        ct: :class:`~EmphysemaXAILib.volume.CTVolume` (HU, (z, y, x)).
        labels: (z, y, x) lung labels on the CT grid (0 background, any non-zero value lung).
        margin_mm: added on every side of the lung's bounding box (clipped to the image).
    """
    if labels.shape != ct.shape:
        raise InputError(f"lung labels are {labels.shape[::-1]} voxels but the CT is {ct.shape[::-1]}")
    nz = ct.shape[0]
    if nz < 3:
        raise InputError(f"the CT has {nz} slice(s); zone patches need at least 3 axial slices")
    lung = labels > 0
    superior_high = ct.direction_matrix[2, 2] >= 0
    sx, sy = float(ct.spacing[0]), float(ct.spacing[1])
    my, mx = int(np.ceil(margin_mm / sy)), int(np.ceil(margin_mm / sx))
    images, hus, lungs, slices, boxes = [], [], [], [], []
    for centre in zone_centres(lung, superior_high):
        centre = min(max(centre, 1), nz - 2)
        z = np.array([centre - 1, centre, centre + 1]) if superior_high else np.array([centre + 1, centre, centre - 1])
        mask = lung[z]
        ys, xs = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
        y0, y1 = max(ys[0] - my, 0), min(ys[-1] + 1 + my, ct.shape[1])
        x0, x1 = max(xs[0] - mx, 0), min(xs[-1] + 1 + mx, ct.shape[2])
        hu = ct.hu[z, y0:y1, x0:x1].astype(np.float32)
        images.append(window(hu))
        hus.append(hu)
        lungs.append(mask[:, y0:y1, x0:x1].copy())
        slices.append(z)
        boxes.append((y0, y1, x0, x1))
    return ZonePatches(images, hus, lungs, np.array(slices, int), np.array(boxes, int), (sx, sy))


def save_zone_preview(patches: ZonePatches, path, title: str = "") -> None:
    """PNG of the three zone patches (centre channel, grey = the [-1000, 400] HU window) with
    the lung outline of the centre slice in orange; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.atomic import write_atomic

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), dpi=100)
    for ax, name, image, lung, z in zip(axes, patches.zones, patches.images, patches.lung, patches.slices):
        sx, sy = patches.spacing
        h, w = image.shape[1:]
        extent = (0, w * sx, h * sy, 0)
        ax.imshow(image[1], cmap="gray", vmin=0.0, vmax=1.0, extent=extent, interpolation="nearest")
        if lung[1].any() and not lung[1].all():
            ax.contour((np.arange(w) + 0.5) * sx, (np.arange(h) + 0.5) * sy, lung[1].astype(float),
                       levels=[0.5], colors="orange", linewidths=0.8)
        ax.set_title(f"{name}: slices {', '.join(map(str, z))}", fontsize=10)
        ax.set_xlabel("mm")
        ax.set_ylabel("mm (anterior at top)")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
