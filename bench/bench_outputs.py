"""Benchmark: writing a case's outputs against computing them, full size (512 x 512 x 400), one run.

Usage (from the project root):
    .venv/bin/python bench/bench_outputs.py [--ct CT.nrrd] [--keep DIR]

Builds the full-size phantom (``phantom.params.SIZES["full"]``; or reads ``--ct``, a CT file of
any size), writes it as NRRD, runs ``pipeline.analyze_case`` (classical engine, the shipped
model, Grad-CAM) and then ``app.case_files.write_case`` (Slicer scene, ``lungs.seg.nrrd``,
offscreen renders, the HTML report, the NRRDs, qct.csv, summary.json), and prints side by side:
each analysis step's seconds (the pipeline's own ``timings_s``), each output-writing part's
seconds (measured by wrapping the functions ``write_case`` calls; nested parts are indented and
included in their parent), both totals and their ratio (goal: writing < analysis), and the peak
resident memory of the analysis and of the writing (goal: <= 3 GB for the whole run).

Peak RSS per step and part: Linux's high-water mark (``VmHWM`` in ``/proc/self/status``) reset
before each by writing 5 to ``/proc/self/clear_refs`` (the phantom is built in a child process,
so its memory is not counted). CPU seconds (all threads of the process) are printed beside wall
seconds: on a shared machine they vary less.
"""
from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from common import full_phantom, status_mb

#: part name -> [seconds, calls, depth, peak RSS in MB during the part (its highest call), CPU seconds
#: of the process (all threads: less noisy than wall time on a shared machine)]
PARTS: dict = {}
#: peak RSS (MB) of the parts running now, innermost last (a part's peak includes its children's)
_STACK: list = []


def reset_peak() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@contextmanager
def phase(name: str, peaks: dict):
    """Time a phase and record its own peak RSS (VmHWM after a reset)."""
    reset_peak()
    start = time.perf_counter()
    yield
    peaks[name] = (time.perf_counter() - start, status_mb("VmHWM"))


def wrap(owner, attribute: str, name: str | None = None, label=None) -> None:
    """Replace ``owner.attribute`` by a timing wrapper recording under ``name`` (or
    ``label(*args)``, for one part per file)."""
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        key = label(*args, **kwargs) if label is not None else name or attribute
        depth = len(_STACK)
        if _STACK:  # what the parent reached so far, before the high-water mark is reset
            _STACK[-1] = max(_STACK[-1], status_mb("VmHWM"))
        _STACK.append(0.0)
        reset_peak()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            peak = max(_STACK.pop(), status_mb("VmHWM"))
            if _STACK:
                _STACK[-1] = max(_STACK[-1], peak)
            entry = PARTS.setdefault(key, [0.0, 0, depth, 0.0, 0.0])
            entry[0] += seconds
            entry[1] += 1
            entry[3] = max(entry[3], peak)
            entry[4] += cpu

    setattr(owner, attribute, timed)


def instrument() -> None:
    """Wrap the output-writing functions where ``write_case`` looks them up."""
    import pandas as pd
    import slicer.util

    from EmphysemaXAILib.app import case_files, report
    from EmphysemaXAILib.mrml import render, scene_export
    from EmphysemaXAILib.phantom import io as phantom_io

    wrap(phantom_io, "save_label", label=lambda array, ct, path, *a, **k: f"NRRD {Path(path).name}")
    wrap(pd.DataFrame, "to_csv", "csv tables")
    wrap(scene_export, "export_case_scene", "scene (build, save, render)")
    wrap(scene_export, "bootstrap", "  headless scene bootstrap")
    wrap(scene_export, "build_case_scene", "  scene build")
    for function in ("volume_node_from_ct", "lung_segmentation_node", "lung_surface_models", "overlay_volume",
                     "volume_rendering", "label_overlay", "add_attributions", "add_patterns"):
        if hasattr(scene_export, function):
            wrap(scene_export, function, f"    {function}")
    wrap(slicer.util, "saveNode", label=lambda node, path, *a, **k: f"  save {Path(path).name}")
    wrap(slicer.util, "saveScene", label=lambda path, *a, **k: f"  save {Path(path).name}")
    wrap(render, "render_slice", "  render slice views")
    wrap(render, "render_3d", "  render 3D view")
    wrap(report, "write_report", "report.html")
    for function in ("laa_views", "pattern_views", "histogram_figure", "zones_figure", "cnn_views",
                     "attribution_views", "teaching_view", "slicer_views"):
        wrap(report, function, f"  figure {function}")
    original_summary = case_files.CaseResult.summary
    wrap(case_files.CaseResult, "summary", "summary.json (object)")
    assert case_files.CaseResult.summary is not original_summary


def main() -> None:
    import SimpleITK as sitk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", help="CT file to analyse (default: the full-size phantom); when it does not exist, "
                        "the phantom is written there (a cache for the next run)")
    parser.add_argument("--make-ct", help=argparse.SUPPRESS)
    parser.add_argument("--keep", help="write the outputs into this folder (replaced) instead of a temporary one")
    args = parser.parse_args()
    if args.make_ct:  # the child process that builds the phantom (its memory is not the run's)
        sitk.WriteImage(full_phantom().ct.to_sitk(), args.make_ct, useCompression=True)
        return

    from EmphysemaXAILib.app.case_files import write_case
    from EmphysemaXAILib.options import AnalysisOptions
    from EmphysemaXAILib.pipeline import analyze_case

    instrument()
    peaks: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.ct) if args.ct else Path(folder) / "ct.nrrd"
        if not path.exists():
            subprocess.run([sys.executable, __file__, "--make-ct", str(path)], check=True)
        options = AnalysisOptions(engine="classical", explain=("gradcam",), device="cpu")
        step_peaks: dict = {}
        current = [None]

        def progress(step, fraction, message):  # each step's own peak RSS
            if current[0] is not None:
                step_peaks[current[0]] = status_mb("VmHWM")
            reset_peak()
            current[0] = step

        cpu = time.process_time()
        with phase("analysis", peaks):
            result = analyze_case(path, options, progress=progress)
        cpu_analysis, cpu = time.process_time() - cpu, time.process_time()
        peaks["analysis"] = (peaks["analysis"][0], max(step_peaks.values()))
        out = Path(args.keep) if args.keep else Path(folder) / "out"
        with phase("writing", peaks):  # (its peak: the highest of its parts' and what is left at the end)
            write_case(result, out, overwrite=bool(args.keep))
        cpu_writing = time.process_time() - cpu
        peaks["writing"] = (peaks["writing"][0], max([peaks["writing"][1]] + [entry[3] for entry in PARTS.values()]))
        files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    print(f"case {'x'.join(map(str, result.ct.shape[::-1]))} voxels, {result.ct.hu.dtype}")
    print(f"\n{'analysis step':36} {'s':>7} {'':6} {'peak RSS MB':>12}")
    for step, seconds in result.timings_s.items():
        print(f"  {step:34} {seconds:7.2f} {'':6} {step_peaks.get(step, float('nan')):12.0f}")
    analysis_steps = sum(result.timings_s.values())
    print(f"  {'sum of steps':34} {analysis_steps:7.2f}   (analyze_case wall {peaks['analysis'][0]:.2f} s)")
    print(f"\n{'output-writing part':36} {'s':>7} {'calls':>6} {'peak RSS MB':>12} {'CPU s':>7}")
    for name, (seconds, calls, _depth, peak, cpu) in PARTS.items():
        print(f"  {name:34} {seconds:7.2f} {calls:6d} {peak:12.0f} {cpu:7.2f}")
    top = sum(entry[0] for entry in PARTS.values() if entry[2] == 0)
    writing = peaks["writing"][0]
    print(f"  {'other (folder, json text, rename)':34} {writing - top:7.2f}")
    print(f"  {'write_case wall':34} {writing:7.2f}")
    print(f"\n{'totals':36} {'s':>7} {'peak RSS MB':>12} {'CPU s':>7}")
    print(f"  {'analysis (analyze_case)':34} {peaks['analysis'][0]:7.2f} {peaks['analysis'][1]:12.0f} "
          f"{cpu_analysis:7.2f}")
    print(f"  {'writing (write_case)':34} {writing:7.2f} {peaks['writing'][1]:12.0f} {cpu_writing:7.2f}")
    print(f"  {'ratio writing / analysis':34} {writing / peaks['analysis'][0]:7.2f} {'':12} "
          f"{cpu_writing / cpu_analysis:7.2f}   (goal < 1)")
    # ru_maxrss follows the resets of the high-water mark: the run's peak is the phases' highest
    whole = max(peaks["analysis"][1], peaks["writing"][1])
    print(f"  {'peak RSS of the run':34} {'':7} {whole:12.0f}   (goal <= 3072 MB)")
    print(f"\n{'file':36} {'MB':>7}")
    for name, size in files.items():
        print(f"  {name:34} {size / 1e6:7.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
