"""Benchmark: peak resident memory of each step of ``analyze``, per voxel, and the fixed overhead.

Usage (from the project root):
    .venv/bin/python bench/bench_memory.py [--sizes small,medium] [--explain gradcam] [--json OUT.json]

For each phantom size (``phantom.params.SIZES``; built and written as NRRD in a child process,
so its memory is not counted) a fresh child process imports the library, torch and slicer-core
(the run's fixed part), records its resident set (``VmRSS``: the *baseline*), then runs
``pipeline.analyze_case`` (default engine, the shipped model, ``--explain``) and
``app.case_files.write_case`` (every output: NRRDs, report, scene). Before every step the Linux
high-water mark is reset (5 written to ``/proc/self/clear_refs``) and read after it (``VmHWM``):
the step's own peak. The table gives, per step, the peak above the baseline in MB and per voxel;
the last column is the slope between the two sizes (bytes per extra voxel: what a larger scan
costs). ``io/memory.py``'s estimate (``STEP_BYTES_PER_VOXEL``, ``FIXED_BYTES``) comes from these
figures (docs/architecture.md, "Memory").

Notes: the model is loaded between QCT and the severity step, so its weights count in ``qct``'s
window; ``outputs`` is ``write_case``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import status_mb

STEPS = ("read", "qc", "segment", "qct", "severity", "explain", "outputs")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def make_ct(size: str, path: str) -> None:
    import SimpleITK as sitk

    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

    phantom = generate_phantom(PhantomParams(size=size, seed=7, extent_pct=15, pattern="mixed", dose="low"))
    sitk.WriteImage(phantom.ct.to_sitk(), path, useCompression=True)


def measure(path: str, explain: str) -> dict:
    """The child: baseline and per-step peaks (MB) of one analysis of ``path``."""
    import slicer  # noqa: F401 - slicer-core: the scene export's libraries are part of the fixed cost
    import torch  # noqa: F401

    from EmphysemaXAILib.app.case_files import write_case
    from EmphysemaXAILib.options import AnalysisOptions
    from EmphysemaXAILib.pipeline import analyze_case

    baseline = status_mb("VmRSS")
    peaks: dict = {}
    current = [None]

    def progress(step, fraction, message):
        if step == current[0]:
            return
        if current[0] is not None:
            peaks[current[0]] = status_mb("VmHWM")
        _reset_peak()
        current[0] = step

    options = AnalysisOptions(explain=tuple(m for m in explain.split(",") if m), device="cpu")
    result = analyze_case(path, options, progress=progress)
    peaks.pop("done", None)
    with tempfile.TemporaryDirectory() as folder:
        _reset_peak()
        write_case(result, Path(folder) / "out")
        peaks["outputs"] = status_mb("VmHWM")
    import resource

    return {"voxels": int(result.ct.hu.size), "shape": list(result.ct.shape), "baseline_mb": baseline,
            "peaks_mb": peaks, "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--explain", default="gradcam")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--make-ct", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_ct:
        make_ct(*args.make_ct)
        return
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1])))
        return
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes.split(","):
            path = str(Path(folder) / f"{size}.nrrd")
            subprocess.run([sys.executable, __file__, "--make-ct", size, path], check=True)
            out = subprocess.run([sys.executable, __file__, "--child", path, args.explain], check=True,
                                 capture_output=True, text=True)
            runs[size] = json.loads(out.stdout.strip().splitlines()[-1])
    sizes = list(runs)
    print(f"{'step':10}" + "".join(f"{s + ' MB':>14}{'B/voxel':>9}" for s in sizes) + f"{'slope B/voxel':>15}")
    for step in STEPS:
        row = f"{step:10}"
        above = {}
        for size in sizes:
            run = runs[size]
            peak = run["peaks_mb"].get(step)
            if peak is None:
                row += f"{'-':>14}{'-':>9}"
                continue
            above[size] = (peak - run["baseline_mb"]) * 2**20
            row += f"{above[size] / 2**20:14.0f}{above[size] / run['voxels']:9.1f}"
        if len(above) >= 2:
            a, b = sizes[0], sizes[-1]
            slope = (above[b] - above[a]) / (runs[b]["voxels"] - runs[a]["voxels"])
            row += f"{slope:15.1f}"
        print(row)
    for size in sizes:
        run = runs[size]
        print(f"{size}: {'x'.join(map(str, run['shape'][::-1]))} = {run['voxels']} voxels, baseline "
              f"{run['baseline_mb']:.0f} MB, whole-run peak (ru_maxrss) {run['ru_maxrss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
