"""Benchmark: a cohort on Dask, 1 worker against 2 workers on this machine, one run.

Usage (from the project root):
    .venv/bin/python bench/bench_cohort.py [--cases 6] [--size medium] [--keep DIR]

Generates ``--cases`` phantoms (medium: 256 x 256 x about 200 at about 1.4 mm, low dose,
emphysema 0-25 %, in a child process each) as NRRD files, then analyses the cohort three ways
with the same options (engine auto: the classical engine without lungmask weights; the shipped
CNN; no scene, no report):

- ``in-process``: one case after the other in this process (``batch --workers 1``: no Dask;
  torch uses every core);
- ``dask 1 worker`` / ``dask 2 workers``: ``batch --workers N``, the product's local Dask
  cluster (``app.cohort_dask.run_on_dask``): N worker processes of one thread each (Dask sets
  OMP_NUM_THREADS=1 in them).

Per row: wall seconds of the whole cohort (cluster start and stop included), cases per hour,
speed-up against the 1-worker cluster, median seconds per case (inside the task), and the
per-case memory peak: the worker process's peak resident set size during that case (Linux's
``VmHWM`` reset before each case by :func:`app.cohort_dask.case_task`), median and maximum over
the cases. That is what one worker needs per case of this size: a machine runs N workers when it
has about N times that memory (plus about 0.2 GB for the client and scheduler).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHANTOM = """
import sys
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom
seed, extent, size, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
params = PhantomParams(size=size, seed=seed, extent_pct=extent, pattern="mixed" if extent else "none", dose="low")
write_phantom(generate_phantom(params), out, fmt="nrrd")
"""


def make_cohort(root: Path, n: int, size: str) -> None:
    work = root.parent / "phantoms"
    for k in range(n):
        target = root / f"case{k:02d}.nrrd"
        if target.exists():
            continue
        folder = work / f"p{k}"
        subprocess.run([sys.executable, "-c", PHANTOM, str(100 + k), str(5.0 * (k % 6)), size, str(folder)],
                       check=True)
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "ct.nrrd", target)


def run(label: str, cases: list, out: Path, options, workers: int | None) -> dict:
    from EmphysemaXAILib.app.cohort_dask import case_task, run_on_dask

    shutil.rmtree(out, ignore_errors=True)
    (out / "cases").mkdir(parents=True)
    start = time.perf_counter()
    if workers is None:
        outcomes = {c["case_id"]: case_task(c, str(out), options, False, False) for c in cases}
    else:
        outcomes = run_on_dask(cases, out, options, report=False, scene=False, workers=workers)
    wall = time.perf_counter() - start
    failed = [k for k, o in outcomes.items() if o["row"]["status"] != "ok"]
    assert not failed, [outcomes[k]["row"]["error"] for k in failed]
    peaks = [o["peak_rss_mb"] for o in outcomes.values()]
    return {"label": label, "wall": wall, "per_hour": 3600 * len(cases) / wall,
            "case_s": statistics.median(o["seconds"] for o in outcomes.values()),
            "peak_med": statistics.median(peaks), "peak_max": max(peaks),
            "workers": len({o["worker"] for o in outcomes.values()})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--size", default="medium", choices=["small", "medium", "full"])
    parser.add_argument("--keep", help="folder for the phantoms and outputs (default: a temporary one)")
    args = parser.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-cohort-"))
    try:
        from EmphysemaXAILib.app.find_cases import find_cases
        from EmphysemaXAILib.options import AnalysisOptions

        make_cohort(base / "root", args.cases, args.size)
        cases = find_cases(base / "root")
        options = AnalysisOptions().resolved()
        print(f"{len(cases)} {args.size} phantom cases, {os.cpu_count()} cores, engine {options.engine}, "
              f"model {'shipped CNN' if options.model_folder else 'none'}; no scene, no report")
        results = [run("in-process (workers 1)", cases, base / "serial", options, None),
                   run("dask 1 worker", cases, base / "dask1", options, 1),
                   run("dask 2 workers", cases, base / "dask2", options, 2)]
        one = results[1]["per_hour"]
        print(f"{'run':<24}{'wall s':>8}{'cases/h':>9}{'speed-up':>10}{'s/case':>8}"
              f"{'peak MB/case (median)':>23}{'(max)':>7}{'processes':>11}")
        for r in results:
            print(f"{r['label']:<24}{r['wall']:>8.1f}{r['per_hour']:>9.0f}{r['per_hour'] / one:>10.2f}"
                  f"{r['case_s']:>8.1f}{r['peak_med']:>23.0f}{r['peak_max']:>7.0f}{r['workers']:>11}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
