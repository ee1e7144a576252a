"""README figure: phantom slices beside real chest CT slices, same window, same scale bar.

Run from the project root: ``.venv/bin/python tools/make_readme_figures.py``. Needs the real
data in ../shared/data (see its README); writes ``docs/images/phantom_vs_real.png``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "docs" / "images" / "phantom_vs_real.png"


def crop_mm(image, spacing, half_mm=(170, 130), center=None):
    """Crop a 2D (y, x) image to +-half_mm around its centre (or ``center`` (y, x) voxels)."""
    cy, cx = center if center is not None else (image.shape[0] // 2, image.shape[1] // 2)
    hy, hx = int(half_mm[1] / spacing[1]), int(half_mm[0] / spacing[0])
    return image[max(cy - hy, 0):cy + hy, max(cx - hx, 0):cx + hx]


def lung_centre(image, window=81):
    """(y, x) of the point with the most lung-density voxels around it."""
    from scipy import ndimage

    lung = ((image > -950) & (image < -600)).astype(np.float32)
    density = ndimage.uniform_filter(lung, window)
    return np.unravel_index(int(np.argmax(density)), image.shape)


def main() -> int:
    from EmphysemaXAILib import read_ct
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

    real = DATA / "lung-pet-ct-dx-A0001"
    texture = DATA / "cip-copdgene" / "crop_ct_2slices.nrrd"
    if not real.exists() or not texture.exists():
        print(f"real data not found under {DATA}: cannot draw the comparison", file=sys.stderr)
        return 1
    healthy = generate_phantom(PhantomParams(size="full", seed=1))
    emphysema = generate_phantom(PhantomParams(size="full", seed=1, extent_pct=20, pattern="centrilobular"))
    ct_real = read_ct(real)
    ct_texture = read_ct(texture)

    def mid_lung_slice(phantom):
        lung = phantom.labels["lungs"] > 0
        return int(np.argsort(lung.sum(axis=(1, 2)))[-len(lung) // 6])

    k = mid_lung_slice(healthy)
    lung_real = (ct_real.hu > -950) & (ct_real.hu < -600)
    k_real = int(np.argmax(lung_real.sum(axis=(1, 2))))
    panels = [
        ("phantom, no emphysema\n(full size, standard dose)", crop_mm(healthy.ct.hu[k], healthy.ct.spacing),
         healthy.ct.spacing),
        ("real: Lung-PET-CT-Dx A0001\n(0.84 mm, 5 mm slice, kernel L)", crop_mm(ct_real.hu[k_real], ct_real.spacing),
         ct_real.spacing),
        ("phantom, centrilobular 20%\n(zoom, upper lung)",
         crop_mm(emphysema.ct.hu[int(len(emphysema.ct.hu) * 0.7)], emphysema.ct.spacing, (60, 45), (220, 180)),
         emphysema.ct.spacing),
        ("real: COPDGene 16021S\n(zoom, 0.59 mm)",
         crop_mm(ct_texture.hu[0], ct_texture.spacing, (60, 45), lung_centre(ct_texture.hu[0])), ct_texture.spacing),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(18, 5.2))
    for ax, (title, image, spacing) in zip(axes, panels):
        height_mm, width_mm = image.shape[0] * spacing[1], image.shape[1] * spacing[0]
        ax.imshow(image, cmap="gray", vmin=-1200, vmax=200, extent=(0, width_mm, height_mm, 0))
        ax.plot([5, 25], [height_mm - 5] * 2, color="yellow", lw=3)
        ax.text(5, height_mm - 9, "20 mm", color="yellow", fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle("Synthetic phantoms beside real chest CT (lung window W 1400 / L -500)", fontsize=12)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=80)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
