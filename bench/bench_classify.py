"""Benchmark: the CNN severity step on a full-size case (512 x 512 x 400, 0.7 x 0.7 x 1 mm).

Usage (from the project root):
    .venv/bin/python bench/bench_classify.py [--model DIR] [--repeats 3]

Generates a full-size phantom (not timed), takes its truth lung labels (segmentation is not part
of this step) and times ``SeverityPredictor.predict`` -- resampling to the 1.4 mm working grid,
tiling, the batched CNN, attention pooling, per-region extents -- split into its parts.
Goal (issue 6): <= 20 s on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch

    from EmphysemaXAILib.model.infer import SeverityPredictor
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    start = time.perf_counter()
    phantom = generate_phantom(PhantomParams(size="full", extent_pct=15, pattern="mixed", seed=11))
    print(f"full phantom {phantom.ct.shape} generated in {time.perf_counter() - start:.1f} s (not timed below)")
    predictor = SeverityPredictor(args.model, device="cpu")
    labels = phantom.labels["lungs"]
    print(f"{'run':>4} {'total s':>8} {'tiling s':>9} {'network s':>10} {'tiles':>6} {'extent %':>9} {'truth %':>8}")
    for run in range(args.repeats):
        start = time.perf_counter()
        result = predictor.predict(phantom.ct, labels)
        total = time.perf_counter() - start
        print(f"{run + 1:>4} {total:8.2f} {result.timings_s['tiling']:9.2f} {result.timings_s['network']:10.2f} "
              f"{result.summary['tiles']:6d} {result.summary['extent_pct']:9.2f} {phantom.truth['extent_pct']:8.2f}")
    print("goal: total <= 20 s on 2 CPU cores")


if __name__ == "__main__":
    main()
