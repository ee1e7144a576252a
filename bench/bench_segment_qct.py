"""Benchmark: lung segmentation engines and QCT on a full-size phantom (512 x 512 x 400).

Usage (from the project root):
    .venv/bin/python bench/bench_segment_qct.py [--lungmask-slices N] [--skip-lungmask]

Prints, side by side in one run: the classical engine; lungmask's R231 U-Net (its real
architecture and inference code, with generated random weights: the same compute as the
published weights) on the same volume, or on its first N slices with the per-volume figure
extrapolated; QCT split into its steps beside the time of one numpy pass over the volume.
Goals: classical <= 10 s; QCT histogram metrics <= 1 s, clusters + noise-robust
extent <= 6 s more.
"""
from __future__ import annotations

import argparse

import numpy as np
from common import full_phantom, lungmask_seconds, timed


def main() -> None:
    from EmphysemaXAILib.analysis.qct import measure_qct
    from EmphysemaXAILib.segmentation import segment_lungs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lungmask-slices", type=int, default=0, help="time lungmask on N slices (0: all)")
    parser.add_argument("--skip-lungmask", action="store_true")
    args = parser.parse_args()

    phantom = full_phantom()
    ct, truth = phantom.ct, phantom.labels["lungs"]

    def dice(a, b):
        return 2.0 * (a & b).sum() / (a.sum() + b.sum())

    classical, t_classical = timed(lambda: segment_lungs(ct, engine="classical"))
    print(f"{'classical engine':34} {t_classical:8.2f} s   Dice vs truth {dice(classical.labels > 0, truth > 0):.4f}")
    if not args.skip_lungmask:
        t_lungmask, n, full = lungmask_seconds(ct, args.lungmask_slices)
        label = f"lungmask R231 ({n} slices)"
        print(f"{label:34} {t_lungmask:8.2f} s   -> {full:.1f} s for {ct.shape[0]} slices "
              f"(generated weights, same compute)")
        print(f"{'ratio lungmask / classical':34} {full / t_classical:8.1f} x")

    _, t_pass = timed(lambda: float(np.add.reduce(ct.hu, axis=None, dtype=np.int64)))
    result, t_qct = timed(lambda: measure_qct(ct, truth))
    steps = result.timings_s
    print(f"{'one numpy pass over the volume':34} {t_pass:8.2f} s")
    print(f"{'QCT total':34} {t_qct:8.2f} s   ({len(result.regions)} regions)")
    for step in ("noise", "histograms", "clusters", "robust_extent"):
        print(f"{'  ' + step:34} {steps.get(step, 0.0):8.2f} s   ({steps.get(step, 0.0) / t_pass:5.1f} numpy passes)")
    whole = result.region("whole")
    print(f"whole lung: naive LAA-950 {whole['laa950_pct']:.2f}%, robust {whole['robust_extent_pct']:.2f}%, "
          f"true {phantom.truth['extent_pct']:.2f}%")


if __name__ == "__main__":
    main()
