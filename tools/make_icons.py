"""Draw the extension icon (128 x 128) and the first screenshot (demo case + QC) with matplotlib.

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
    from EmphysemaXAILib.qc import run_qc
    from EmphysemaXAILib.sample import make_sample_ct

    ct = make_sample_ct(seed=0, blood_hu=280.0)
    report = run_qc(ct)
    fig, (image, text) = plt.subplots(1, 2, figsize=(10, 5), gridspec_kw={"width_ratios": [1, 1.1]})
    image.imshow(ct.hu[ct.shape[0] // 2], cmap="gray", vmin=-1000, vmax=400)
    image.set_title("sample chest CT (axial, W 1400 / L -300)")
    image.axis("off")
    lines = ["Quality control", ""] + [f"warning: {w}" for w in report.warnings] + [""]
    lines += [f"{k}: {report.measures[k]}" for k in ("noise_hu", "air_hu", "blood_pool_hu",
                                                      "lung_air_volume_ml", "padding_fraction")]
    lines += ["", "Research and teaching use only: not a medical device."]
    text.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8, wrap=True)
    text.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    for target in (ROOT / "Resources" / "Icons" / "EmphysemaXAI.png",
                   ROOT / "EmphysemaXAI" / "Resources" / "Icons" / "EmphysemaXAI.png"):
        icon(target)
    screenshot(ROOT / "Resources" / "Screenshots" / "1.png")
