"""Benchmark: phantom generation per size and the amortised rate of the patch sampler.

Usage (from the project root): ``.venv/bin/python bench/bench_phantom.py [--repeats 2] [--skip-full]``

Goals: small phantom under 2 s, full size (512 x 512 x 400) under 60 s on 2 cores;
patch sampler above 200 patches per second amortised over the phantom's generation.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.patches import sample_patches


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-full", action="store_true")
    args = parser.parse_args()
    sizes = ["small", "medium"] + ([] if args.skip_full else ["full"])
    print(f"{'size':8} {'pattern':14} {'shape (z,y,x)':16} {'seconds (each run)':24} {'extent %':>9}")
    phantoms = {}
    for size in sizes:
        times = []
        for repeat in range(args.repeats):
            params = PhantomParams(extent_pct=15, pattern="mixed", size=size, seed=100 + repeat)
            phantom, seconds = timed(lambda params=params: generate_phantom(params))
            times.append(seconds)
        phantoms[size] = (phantom, min(times))
        print(f"{size:8} {'mixed 15%':14} {'x'.join(map(str, phantom.ct.shape)):16} "
              f"{', '.join(f'{t:.2f}' for t in times):24} {phantom.truth['extent_pct']:9.2f}")

    print()
    print(f"{'phantom':8} {'patches':>8} {'patch s':>8} {'patches/s (sampling)':>21} "
          f"{'patches/s (amortised with generation)':>38}")
    for size, count in (("medium", 2000), ("full", 10000)):
        if size not in phantoms:
            continue
        phantom, generation = phantoms[size]
        batch, seconds = timed(lambda phantom=phantom, count=count:
                               sample_patches(phantom, count, size=64, slices=3, rng=0))
        assert len(batch) == count and np.isfinite(batch.emphysema_fraction).all()
        print(f"{size:8} {count:8d} {seconds:8.2f} {count / seconds:21.0f} "
              f"{count / (generation + seconds):38.0f}")


if __name__ == "__main__":
    main()
