"""Benchmark: the CNN step on a full-size case (512 x 512 x 400, 0.7 x 0.7 x 1 mm).

Usage (from the project root):
    .venv/bin/python bench/bench_classify.py [--model DIR ...] [--repeats 3]

Generates a full-size phantom (not timed), takes its truth lung labels (segmentation is not part
of this step) and times ``predict`` of each model, interleaved run by run so the machine's noise
hits both alike: the shipped pattern model (resampling to its 1 x 1 x 2 mm working grid, the
dense 2D CNN on every working slice, pattern shares and extents, maps back on the CT grid) and
the earlier phantom severity model (1.4 mm grid, 2.5D tiles, attention pooling), split into parts.
Goal: the pattern model's step <= 15 s on 2 CPU cores (severity model v1: 7.7 s).
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch

    from EmphysemaXAILib.model import open_predictor
    from EmphysemaXAILib.model.checkpoint import SEVERITY_V1_DIR, SHIPPED_DIR
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="model folder (repeatable; default: the shipped pattern model and severity v1)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    start = time.perf_counter()
    phantom = generate_phantom(PhantomParams(size="full", extent_pct=15, pattern="mixed", seed=11))
    print(f"full phantom {phantom.ct.shape} generated in {time.perf_counter() - start:.1f} s (not timed below)")
    predictors = [open_predictor(m, device="cpu") for m in (args.model or [SHIPPED_DIR, SEVERITY_V1_DIR])]
    labels = phantom.labels["lungs"]
    totals = {p.info["name"]: [] for p in predictors}
    print(f"{'run':>4} {'model':<34} {'total s':>8}  parts (s)                               "
          f"{'extent %':>9} {'truth %':>8}")
    for run in range(args.repeats):
        for predictor in predictors:
            start = time.perf_counter()
            result = predictor.predict(phantom.ct, labels)
            total = time.perf_counter() - start
            totals[predictor.info["name"]].append(total)
            parts = ", ".join(f"{k} {v:.2f}" for k, v in result.timings_s.items())
            print(f"{run + 1:>4} {predictor.info['name']:<34} {total:8.2f}  {parts:<40} "
                  f"{result.summary['extent_pct']:9.2f} {phantom.truth['extent_pct']:8.2f}")
    best = {name: min(values) for name, values in totals.items()}
    names = list(best)
    print("best of runs: " + ", ".join(f"{n} {best[n]:.2f} s" for n in names))
    if len(names) == 2:
        print(f"ratio {names[0]} / {names[1]}: {best[names[0]] / best[names[1]]:.2f}")
    print("goal: the pattern model <= 15 s on 2 CPU cores")


if __name__ == "__main__":
    main()
