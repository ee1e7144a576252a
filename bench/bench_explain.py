"""Benchmark: explanations on a full-size case (512 x 512 x 400), side by side in one run.

Usage (from the project root):
    .venv/bin/python bench/bench_explain.py [--lungmask-slices N] [--skip-ig]

Prints, in one run on the same full-size phantom:
1. the classification step alone (the shipped model's predict) and Grad-CAM added to it (goal:
   Grad-CAM <= 2 x the classification step);
2. integrated gradients, 32 steps, on the most-attended tiles (goal: <= 60 s);
3. the end-to-end command `analyze --explain gradcam --no-scene --no-report` (reading, QC,
   classical segmentation, QCT, CNN, Grad-CAM, writing) against lungmask's R231 model alone on the
   same volume (its real architecture and inference code with generated weights: the same
   compute; on N slices and extrapolated when --lungmask-slices is given) and the ratio
   (goal <= 0.15).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import full_phantom, lungmask_seconds, timed


def main() -> None:
    import SimpleITK as sitk

    from EmphysemaXAILib.explain.assemble import explain_case
    from EmphysemaXAILib.model import open_predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lungmask-slices", type=int, default=0, help="time lungmask on N slices (0: all)")
    parser.add_argument("--skip-ig", action="store_true")
    args = parser.parse_args()
    phantom = full_phantom()
    ct, labels = phantom.ct, phantom.labels["lungs"]
    predictor = open_predictor(device="cpu")
    severity, t_classify = timed(lambda: predictor.predict(ct, labels))
    print(f"{'classification step':40} {t_classify:8.2f} s   ({severity.summary['tiles']} tiles)")
    gradcam = explain_case(predictor.model, severity, ct, labels, ["gradcam"], fusion=predictor.fusion)["gradcam"]
    print(f"{'Grad-CAM (all tiles, CT grid)':40} {gradcam.seconds:8.2f} s   = {gradcam.seconds / t_classify:.2f} x "
          "the classification step (goal <= 2)")
    if not args.skip_ig:
        ig = explain_case(predictor.model, severity, ct, labels, ["ig"], fusion=predictor.fusion)["ig"]
        print(f"{'integrated gradients, 32 steps':40} {ig.seconds:8.2f} s   ({ig.tiles_explained} most-attended "
              f"tiles of {ig.tiles_total}; goal <= 60 s)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ct.nrrd"
        sitk.WriteImage(ct.to_sitk(), str(path))
        command = [sys.executable, "-m", "EmphysemaXAILib", "analyze", str(path), "--out", str(Path(folder) / "out"),
                   "--engine", "classical", "--explain", "gradcam", "--no-scene", "--no-report"]
        done, t_analyze = timed(lambda: subprocess.run(command, capture_output=True, text=True))
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        print(f"{'analyze --explain gradcam (end to end)':40} {t_analyze:8.2f} s")
    _, n, full = lungmask_seconds(ct, args.lungmask_slices)
    print(f"{'lungmask R231 alone':40} {full:8.2f} s   ({n} slices timed{', extrapolated' if n < ct.shape[0] else ''})")
    print(f"{'ratio analyze+Grad-CAM / lungmask':40} {t_analyze / full:8.3f}     (goal <= 0.15)")


if __name__ == "__main__":
    main()
