"""Preview PNG of a phantom: axial and coronal views (lung window) with the lesion mask outlined.

Drawn with matplotlib; the coronal view keeps the true aspect ratio (pixel spacing vs slice
spacing). Lesion outlines are coloured by subtype (centrilobular, panlobular, paraseptal,
bullous); the lung outline is thin and white.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SUBTYPE_COLORS = {1: "#ffb000", 2: "#ff3b30", 3: "#34c3ff", 4: "#b15cff"}
SUBTYPE_NAMES = {1: "centrilobular", 2: "panlobular", 3: "paraseptal", 4: "bullous"}


def _best_slices(lungs: np.ndarray, emphysema: np.ndarray):
    """Axial slice and coronal row showing the most lesion (or lung when there is none)."""
    weight = (emphysema > 0) if emphysema.any() else (lungs > 0)
    axial = int(np.argmax(weight.sum(axis=(1, 2))))
    coronal = int(np.argmax(weight.sum(axis=(0, 2))))
    return axial, coronal


def save_preview(phantom, path, title: str | None = None) -> Path:
    """Write the preview PNG of ``phantom`` to ``path`` (returned)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    ct, labels, truth = phantom.ct, phantom.labels, phantom.truth
    lungs, emphysema = labels["lungs"], labels["emphysema"]
    k, j = _best_slices(lungs, emphysema)
    sx, sy, sz = ct.spacing
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.4))
    views = [("axial", ct.hu[k], lungs[k], emphysema[k], sy / sx, f"axial slice {k}"),
             ("coronal", ct.hu[::-1, j, :], lungs[::-1, j, :], emphysema[::-1, j, :], sz / sx,
              f"coronal row {j} (head at top)")]
    for ax, (_, image, lung, lesion, aspect, label) in zip(axes, views):
        ax.imshow(image, cmap="gray", vmin=-1200, vmax=200, aspect=aspect, interpolation="nearest")
        if lung.any():
            ax.contour(lung > 0, levels=[0.5], colors="white", linewidths=0.4)
        for code, color in SUBTYPE_COLORS.items():
            if (lesion == code).any():
                ax.contour(lesion == code, levels=[0.5], colors=color, linewidths=0.7)
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    params = truth["params"]
    heading = title or (f"phantom seed {params['seed']}: {truth['subtype']} {truth['extent_pct']:.1f}% "
                        f"({truth['severity']}), {params['dose']} dose, {params['kernel']} kernel, "
                        f"noise {truth['noise_hu']:.0f} HU, naive LAA-950 {truth['laa950_pct']:.1f}%")
    fig.suptitle(heading + "\nlung window W 1400 / L -500; synthetic, not a real patient", fontsize=10)
    handles = [Line2D([], [], color=c, label=SUBTYPE_NAMES[code]) for code, c in SUBTYPE_COLORS.items()
               if (emphysema == code).any()]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 0.93))
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
