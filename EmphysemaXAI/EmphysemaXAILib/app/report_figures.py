"""The figures of the HTML report, each returned as a PNG data URI (matplotlib; the caller picks the backend).

LAA map views with the lung outline, the coronal LAA projection, the lung HU histogram, the
per-zone bar chart, the pattern map beside the LAA map, the CNN's working grid, attribution
maps, the teaching view and the views Slicer rendered. Spacing is (x, y, z) mm and volumes
(z, y, x), as everywhere; coronal planes are shown head up.
"""
from __future__ import annotations

import base64
import io
import textwrap

import numpy as np

from ..analysis.patterns import PATTERN_COLORS, PATTERNS

#: LAA map colours by cluster size class (1 < 5 mm, 2 5-10, 3 10-20, 4 >= 20 mm).
#: LAA cluster sizes in one teal-to-cyan scale, brighter for bigger clusters (on the dark lung):
#: no colour of the pattern map (yellow, orange, red centrilobular; blue paraseptal; purple
#: panlobular) means something else here.
LAA_COLORS = ("#00868f", "#00c2c7", "#5cf2ee", "#b0fff4")
LAA_NAMES = ("< 5 mm", "5-10 mm", "10-20 mm", ">= 20 mm")

#: Fewer slices than this: the report shows axial views only (a coronal plane of one or two
#: rows says nothing and cannot be outlined).
MIN_SLICES_FOR_CORONAL = 3

#: Pattern map colours (codes 1-6) and legend names, from the scene's colour table.
PATTERN_RGB = tuple(rgba[:3] for _, _, rgba in PATTERN_COLORS[1:])
PATTERN_NAMES = tuple(name if rgba[3] > 0 else f"{name} (not overlaid)" for _, name, rgba in PATTERN_COLORS[1:])

#: The teaching view's panels: (title, what it means and what it does not prove).
TEACHING = (
    ("CT", "What the scanner measured: dark is air, lung tissue is grey; emphysema shows as darker holes. "
           "It does not say by itself how much of the lung is destroyed."),
    ("LAA map", "Voxels at or below -950 HU, coloured by cluster size: a threshold count. Noise and sharp "
                "kernels add false voxels; it does not see texture."),
    ("model attribution", "Where the network's emphysema estimate came from (brighter = pushed the estimate up). "
                          "It shows what the model used, not proof that a region is diseased."),
    ("per-zone scores", "Share of the positive attribution in each lung third: which zones drove the estimate. "
                        "A high share is not a diagnosis of that zone."),
)

#: Names of the views Slicer renders for the report.
SLICER_VIEW_NAMES = {"3d": "3D view", "axial": "axial slice view", "coronal": "coronal slice view"}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _outline(ax, mask, color: str = "#f1f3f5", width: float = 0.6) -> None:
    """Draw the 0.5 contour of a 2D boolean mask (skipped when the image is thinner than 2 x 2
    pixels or the mask is empty / full: matplotlib cannot contour it)."""
    if min(mask.shape) >= 2 and mask.any() and not mask.all():
        ax.contour(mask, levels=[0.5], colors=color, linewidths=width)


def _view_slices(labels, laa_map) -> tuple:
    """(k, j): the axial slice with the most LAA (the most lung when there is none) and the
    coronal row through the most lung, the slices of every LAA-map figure."""
    lung = labels > 0
    k = int(np.argmax((laa_map > 0).sum(axis=(1, 2)))) if laa_map.any() else int(np.argmax(lung.sum(axis=(1, 2))))
    return k, int(np.argmax(lung.sum(axis=(0, 2))))


def laa_views(ct, labels, laa_map) -> str:
    """Axial slice with the most LAA, coronal row through the most lung, and the coronal LAA
    projection; for inputs of one or two slices the axial slice with and without the overlay."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    lung = labels > 0
    k, j = _view_slices(labels, laa_map)
    sx, sy, sz = ct.spacing
    cmap = ListedColormap(LAA_COLORS)
    thin = ct.hu.shape[0] < MIN_SLICES_FOR_CORONAL
    fig, axes = plt.subplots(1, 2 if thin else 3, figsize=(10 if thin else 15, 5.2))
    panels = [(ct.hu[k], lung[k], laa_map[k], sy / sx, f"axial slice {k}")]
    if thin:
        panels.append((ct.hu[k], lung[k], np.zeros_like(laa_map[k]), sy / sx,
                       f"axial slice {k} without overlay ({ct.hu.shape[0]}-slice input: no coronal view)"))
    else:
        panels.append((ct.hu[::-1, j], lung[::-1, j], laa_map[::-1, j], sz / sx, f"coronal row {j} (head up)"))
    for ax, (image, outline, laa, aspect, title) in zip(axes, panels):
        ax.imshow(image, cmap="gray", vmin=-1200, vmax=200, aspect=aspect, interpolation="nearest")
        _outline(ax, outline)
        overlay = np.ma.masked_equal(laa, 0)
        ax.imshow(overlay, cmap=cmap, vmin=0.5, vmax=4.5, alpha=0.8, aspect=aspect, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    if not thin:
        projection = (laa_map > 0).sum(axis=1)[::-1]
        axes[2].imshow(lung.any(axis=1)[::-1], cmap="gray", vmin=0, vmax=3, aspect=sz / sx)
        axes[2].imshow(np.ma.masked_equal(projection, 0), cmap="inferno", aspect=sz / sx)
        axes[2].set_title("coronal projection: LAA voxels per column", fontsize=10)
        axes[2].axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in LAA_COLORS]
    fig.legend(handles, [f"LAA cluster {n}" for n in LAA_NAMES], loc="lower center", ncol=4, frameon=False)
    return _png(fig)


def histogram_figure(ct, labels, whole) -> str:
    import matplotlib.pyplot as plt

    edges = np.arange(-1100, 201, 5)
    counts = lung_histogram(ct.hu, labels, edges)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(edges[:-1], bins=edges, weights=counts, color="#457b9d")  # the same bars as hist(values)
    for hu, label, color in ((-950, "-950 HU", "#e63946"), (-856, "-856 HU", "#f4a261"),
                             (whole["perc15_hu"], f"Perc15 {whole['perc15_hu']} HU", "#2a9d8f")):
        ax.axvline(hu, color=color, lw=1.5, label=label)
    ax.set_xlabel("HU")
    ax.set_ylabel("lung voxels")
    ax.set_title("lung density histogram")
    ax.legend(fontsize=8)
    return _png(fig)


def lung_histogram(hu, labels, edges) -> np.ndarray:
    """Counts of the lung voxels' HU (``labels > 0``) in the bins of ``edges`` (as
    ``np.histogram``: the last bin includes its right edge), slice by slice, so no
    lung-sized copy of the volume is made."""
    counts = np.zeros(len(edges) - 1, np.int64)
    for hu_slice, label_slice in zip(hu, labels):
        values = hu_slice[label_slice > 0]
        if values.size:
            counts += np.histogram(values, bins=edges)[0]
    return counts


def zones_figure(qct, cnn: dict | None = None, key: str = "laa950_pct") -> str:
    """Bars per zone: the QCT figure the zone grades come from (``key``, a qct row key), the
    other of %LAA-950 / noise-robust extent on the same HU scale, and the CNN's extent."""
    import matplotlib.pyplot as plt

    names = [f"{s}_{t}" for s in ("right", "left") for t in ("upper", "middle", "lower")]
    scale = "_calibrated" if key.endswith("_calibrated") else ""
    figures = {f"laa950_pct{scale}": f"%LAA-950{' calibrated' if scale else ''}",
               f"robust_extent_pct{scale}": f"noise-robust extent{' calibrated' if scale else ''}"}
    order = [key] + [k for k in figures if k != key]
    bars = [(figures.get(k, k) + (" (zone grades)" if k == key else ""), color,
             [qct.region(n).get(k) or 0 for n in names]) for k, color in zip(order, ("#264653", "#e76f51"))]
    if cnn is not None:
        bars.append(("CNN extent", "#8ab17d", [cnn["extent_by_region"].get(n) or 0 for n in names]))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(names))
    width = 0.8 / len(bars)
    for i, (label, color, values) in enumerate(bars):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, values, width, label=label, color=color)
    for bound in (0.5, 5, 20):
        ax.axhline(bound, color="gray", lw=0.6, ls=":")
    ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylabel("% of zone")
    ax.set_title("emphysema by zone (dotted: zone grade bounds)")
    ax.legend(fontsize=8)
    return _png(fig)


def pattern_views(ct, labels, laa_map, pattern_map) -> str:
    """The LAA map and the pattern map side by side in the slices of the LAA-map figure (axial
    slice with the most LAA, coronal row through the most lung; axial only for thin inputs),
    with the legends of both. Normal lung and outside-lung voxels are not coloured."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    lung = labels > 0
    k, j = _view_slices(labels, laa_map)
    sx, sy, sz = ct.spacing
    planes = [(lambda v: v[k], sy / sx, f"axial slice {k}")]
    if ct.hu.shape[0] >= MIN_SLICES_FOR_CORONAL:
        planes.append((lambda v: v[::-1, j], sz / sx, f"coronal row {j} (head up)"))
    layers = [("LAA map", laa_map, ListedColormap(LAA_COLORS), 4, 0),
              ("emphysema patterns", pattern_map, ListedColormap(PATTERN_RGB), len(PATTERNS), 1)]
    fig, axes = plt.subplots(len(planes), 2, figsize=(10, 5.0 * len(planes)), squeeze=False)
    for row, (cut, aspect, where) in zip(axes, planes):
        for ax, (name, volume, cmap, top, hidden) in zip(row, layers):
            ax.imshow(cut(ct.hu), cmap="gray", vmin=-1200, vmax=200, aspect=aspect, interpolation="nearest")
            _outline(ax, cut(lung))
            ax.imshow(np.ma.masked_less_equal(cut(volume), hidden), cmap=cmap, vmin=0.5, vmax=top + 0.5, alpha=0.8,
                      aspect=aspect, interpolation="nearest")
            ax.set_title(f"{name} - {where}", fontsize=10)
            ax.axis("off")
    legends = [([f"LAA cluster {n}" for n in LAA_NAMES], LAA_COLORS), (list(PATTERN_NAMES), PATTERN_RGB)]
    for ax, (names, colors) in zip(axes[-1], legends):
        ax.legend([plt.Rectangle((0, 0), 1, 1, color=c) for c in colors], names, loc="upper center",
                  bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False, fontsize=9)
    return _png(fig)


def cnn_views(severity) -> str:
    """Axial and coronal slices of the model's working grid with its per-tile emphysema fraction."""
    import matplotlib.pyplot as plt

    grid, fraction = severity.grid, severity.fraction_map
    lung = grid.labels > 0
    k = int(np.argmax((fraction * lung).sum(axis=(1, 2))))
    j = int(np.argmax(lung.sum(axis=(0, 2))))
    sx, _, sz = grid.spacing
    vmax = max(0.05, float(fraction.max()))
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    panels = [(grid.hu[k], fraction[k], lung[k], 1.0, f"axial slice {k} (working grid)")]
    if grid.hu.shape[0] > 1:
        panels.append((grid.hu[::-1, j], fraction[::-1, j], lung[::-1, j], sz / sx, f"coronal row {j} (head up)"))
    for ax, (image, frac, outline, aspect, title) in zip(axes, panels):
        ax.imshow(image, cmap="gray", vmin=-1200, vmax=200, aspect=aspect, interpolation="nearest")
        shown = ax.imshow(np.ma.masked_where(~outline, frac * 100), cmap="viridis", vmin=0, vmax=vmax * 100,
                          alpha=0.55, aspect=aspect, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.colorbar(shown, ax=list(axes), shrink=0.7, label="predicted emphysema, % of the tile's lung")
    return _png(fig)


def display_top(volume) -> float:
    """Top of an attribution map's colour scale: the 99.5th percentile of its positive values
    (1.0 when there are none). Only the positive voxels are copied (the map is zero outside the
    lung), never the whole volume."""
    positive = volume[volume > 0]
    return float(np.percentile(positive, 99.5)) if positive.size else 1.0


def _planes(volume, k, j, i):
    """Axial (k), coronal (j, head up) and sagittal (i, head up) planes of a (z, y, x) volume."""
    return volume[k], volume[::-1, j], volume[::-1, :, i]


def attribution_views(ct, labels, laa_map, explanations) -> str:
    """Per method: axial / coronal / sagittal planes through the attribution peak with the map
    (values under 20% of its 99.5th percentile transparent), and the LAA map in the same planes."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    sx, sy, sz = ct.spacing
    aspects = (sy / sx, sz / sx, sz / sy)
    rows = [("LAA map (<= -950 HU)", laa_map, ListedColormap(LAA_COLORS), (0.5, 4.5))] + [
        (f"attribution: {m}", e.volume, "hot", (0.0, display_top(e.volume))) for m, e in explanations.items()]
    first = next(iter(explanations.values())).volume
    peak = np.unravel_index(int(np.argmax(first)), first.shape) if first.max() > 0 else \
        tuple(int(np.argmax((labels > 0).sum(axis=a))) for a in ((1, 2), (0, 2), (0, 1)))
    k, j, i = peak
    planes = 1 if ct.hu.shape[0] < MIN_SLICES_FOR_CORONAL else 3  # thin inputs: axial only
    fig, axes = plt.subplots(len(rows), planes, figsize=(4.4 * planes, 4.2 * len(rows)), squeeze=False)
    for row, (title, volume, cmap, limits) in zip(axes, rows):
        attribution = not isinstance(cmap, ListedColormap)  # masked on the planes, never on the whole volume
        for ax, image, plane_values, labels_plane, aspect, plane in zip(
                row, _planes(ct.hu, k, j, i), _planes(volume, k, j, i), _planes(labels, k, j, i), aspects,
                ("axial", "coronal", "sagittal")):
            overlay = (np.ma.masked_less(plane_values, 0.2 * limits[1]) if attribution
                       else np.ma.masked_equal(plane_values, 0))
            ax.imshow(image, cmap="gray", vmin=-1200, vmax=200, aspect=aspect, interpolation="nearest")
            _outline(ax, labels_plane > 0, width=0.5)
            ax.imshow(overlay, cmap=cmap, vmin=limits[0], vmax=limits[1], alpha=0.75, aspect=aspect,
                      interpolation="nearest")
            ax.set_title(f"{title} - {plane}", fontsize=9)
            ax.axis("off")
    return _png(fig)


def teaching_view(ct, labels, laa_map, method, explanation) -> str:
    """CT, LAA map, the model's attribution and the per-zone scores side by side, each with one
    sentence on what it means and what it does not prove."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    volume = explanation.volume
    k = int(np.argmax(volume.reshape(len(volume), -1).sum(axis=1))) if volume.max() > 0 else \
        int(np.argmax((labels > 0).sum(axis=(1, 2))))
    sx, sy, _ = ct.spacing
    fig, axes = plt.subplots(1, 4, figsize=(18, 5.6), gridspec_kw={"width_ratios": [1, 1, 1, 1.1]})
    top = display_top(volume)
    overlays = [None, (np.ma.masked_equal(laa_map[k], 0), ListedColormap(LAA_COLORS), 0.5, 4.5),
                (np.ma.masked_less(volume[k], 0.2 * top), "hot", 0.0, top)]
    from ..explain.assemble import TEXTURE_ONLY

    sentences = [sentence for _, sentence in TEACHING[:3]]
    if TEXTURE_ONLY in (explanation.explains or ""):
        sentences[2] += (" This map sees only the texture term of the estimate, not its density term: on real "
                         "CT it can light vessels rather than what raised the number (integrated gradients "
                         "covers both).")
    for ax, overlay, (title, _), sentence in zip(axes[:3], overlays, TEACHING[:3], sentences):
        ax.imshow(ct.hu[k], cmap="gray", vmin=-1200, vmax=200, aspect=sy / sx, interpolation="nearest")
        if overlay is not None:
            ax.imshow(overlay[0], cmap=overlay[1], vmin=overlay[2], vmax=overlay[3], alpha=0.8, aspect=sy / sx,
                      interpolation="nearest")
        ax.set_title(title if title != "model attribution" else f"model attribution ({method})", fontsize=11)
        ax.text(0.5, -0.04, textwrap.fill(sentence, 48), transform=ax.transAxes, ha="center", va="top", fontsize=8.5)
        ax.axis("off")
    zones = [f"{s}_{t}" for s in ("right", "left") for t in ("upper", "middle", "lower")]
    scores = [explanation.region_scores.get(z) or 0.0 for z in zones]
    axes[3].barh(range(len(zones))[::-1], scores, color="#e85d04")
    axes[3].set_yticks(range(len(zones))[::-1], [z.replace("_", " ") for z in zones])
    axes[3].set_xlabel("share of positive attribution")
    axes[3].set_title(TEACHING[3][0], fontsize=11)
    axes[3].text(0.5, -0.14, textwrap.fill(TEACHING[3][1], 48), transform=axes[3].transAxes, ha="center", va="top",
                 fontsize=8.5)
    fig.subplots_adjust(bottom=0.25, wspace=0.35, left=0.02, right=0.98)
    return _png(fig)


def slicer_views(views, shown_3d: str = "LAA clusters") -> str:
    """The views Slicer rendered (3D, axial, coronal) as one figure; ``shown_3d``: what the 3D
    view renders inside the lungs (a saved case shows the LAA map: :mod:`..mrml.views`)."""
    import matplotlib.pyplot as plt

    titles = {**SLICER_VIEW_NAMES, "3d": f"3D: {shown_3d} inside the lungs (anterior view)"}
    fig, axes = plt.subplots(1, len(views), figsize=(5 * len(views), 5.2))
    for ax, (key, image) in zip(np.atleast_1d(axes), views.items()):
        ax.imshow(image)
        ax.set_title(titles.get(key, key), fontsize=10)
        ax.axis("off")
    return _png(fig)
