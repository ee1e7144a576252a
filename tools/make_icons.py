"""Draw the extension icon (128 x 128) and the first screenshot (Slicer slice views of a phantom).

Run from the project root: ``.venv/bin/python tools/make_icons.py``. The PNGs are committed;
rerun after a change of design.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def icon(path: Path) -> None:
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((0.04, 0.04), 0.92, 0.92, boxstyle="round,pad=0,rounding_size=0.18",
                                color="#1d3557"))
    for cx, angle in ((0.32, 8), (0.68, -8)):
        ax.add_patch(Ellipse((cx, 0.47), 0.3, 0.62, angle=angle, color="#a8dadc"))
    for cx, cy, r, c in ((0.3, 0.62, 0.07, "#e63946"), (0.36, 0.56, 0.045, "#f4a261"),
                         (0.7, 0.68, 0.05, "#f4a261")):
        ax.add_patch(Ellipse((cx, cy), 2 * r, 2 * r, color=c, alpha=0.9))
    ax.plot([0.5, 0.5], [0.9, 0.7], color="#a8dadc", lw=5, solid_capstyle="round")
    ax.plot([0.5, 0.4, 0.5, 0.6], [0.7, 0.63, 0.7, 0.63], color="#a8dadc", lw=4, solid_capstyle="round")
    fig.savefig(path, dpi=100, transparent=True)
    plt.close(fig)


def screenshot(path: Path) -> None:
    """Slicer's own slice views (axial, coronal) of an analysed phantom, rendered headless."""
    import tempfile

    from EmphysemaXAILib.mrml.app import bootstrap
    from EmphysemaXAILib.mrml.render import ras_offset, render_slice
    from EmphysemaXAILib.mrml.scene_export import build_case_scene
    from EmphysemaXAILib.options import AnalysisOptions
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
    from EmphysemaXAILib.phantom.io import write_phantom
    from EmphysemaXAILib.pipeline import analyze_case

    phantom = generate_phantom(PhantomParams(size="medium", seed=3, extent_pct=18, pattern="mixed"))
    with tempfile.TemporaryDirectory() as folder:
        write_phantom(phantom, Path(folder) / "ph", fmt="nrrd")
        result = analyze_case(Path(folder) / "ph" / "ct.nrrd", AnalysisOptions(engine="classical"))
    scene, app_logic = bootstrap(fresh=True)
    build_case_scene(result, scene, app_logic)
    laa = result.qct.laa_map
    k = int(np.argmax((laa > 0).sum(axis=(1, 2))))
    j = int(np.argmax((laa > 0).sum(axis=(0, 2))))
    axial = render_slice(app_logic, "Red", ras_offset(result.ct, (k, 0, 0), "Red"), None, 480)
    coronal = render_slice(app_logic, "Green", ras_offset(result.ct, (0, j, 0), "Green"), None, 480)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.3))
    for ax, image, title in zip(axes, (axial, coronal), ("axial", "coronal")):
        ax.imshow(image)
        ax.set_title(f"{title}: CT with the LAA map overlay (Slicer slice view)", fontsize=9)
        ax.axis("off")
    severity = result.qct.qct_severity
    fig.suptitle(f"EmphysemaXAI on a phantom: {severity['class']}, extent {severity['extent_pct']:.1f}% "
                 "(research and teaching use only)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    for target in (ROOT / "Resources" / "Icons" / "EmphysemaXAI.png",
                   ROOT / "EmphysemaXAI" / "Resources" / "Icons" / "EmphysemaXAI.png"):
        icon(target)
    screenshot(ROOT / "Resources" / "Screenshots" / "1.png")
