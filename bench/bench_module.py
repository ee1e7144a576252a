"""Benchmark: what the Slicer module's user waits for, headless on slicer-core.

Usage (from the project root): ``.venv/bin/python bench/bench_module.py [--shape 300,512,512]``

Prints, side by side in one run:
- an attribution slider tick: the display range computed from the voxels on every tick (the
  earlier behaviour) vs read from the node's cached range (now), on a float32 volume of --shape;
- Cancel: seconds from the request until the analysis process has exited, at an early step and
  inside the lung segmentation;
- the child process's own cost: the same small case analysed in this process and as a child
  process (start-up, imports, export of the inputs and loading the results back).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "EmphysemaXAI"))


def slider(shape) -> tuple[float, float]:
    import slicer.util

    from EmphysemaXAILib.mrml.app import bootstrap
    from EmphysemaXAILib.mrml.nodes import (
        MAX_ATTRIBUTE,
        TOP_ATTRIBUTE,
        attribution_color_node,
        cache_attribution_range,
        style_attribution,
    )

    scene, app_logic = bootstrap(fresh=True)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Attribution gradcam")
    values = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    slicer.util.updateVolumeFromArray(node, values)
    node.CreateDefaultDisplayNodes()
    colors = attribution_color_node(scene)
    ticks = np.linspace(0.05, 0.9, 10)
    start = time.perf_counter()
    for threshold in ticks:  # the range from the voxels every time (no cached attributes)
        node.RemoveAttribute(TOP_ATTRIBUTE)
        node.RemoveAttribute(MAX_ATTRIBUTE)
        style_attribution(node, colors, threshold=float(threshold), app_logic=app_logic, opacity=0.6)
    uncached = (time.perf_counter() - start) / len(ticks)
    cache_attribution_range(node)
    start = time.perf_counter()
    for threshold in ticks:
        style_attribution(node, colors, threshold=float(threshold), app_logic=app_logic, opacity=0.6)
    cached = (time.perf_counter() - start) / len(ticks)
    return uncached, cached


def cancel_latency(ct_path: Path, wait_for: str) -> float:
    from EmphysemaXAILib.app.analysis_process import AnalysisProcess, analysis_command, new_work_dir
    from EmphysemaXAILib.options import AnalysisOptions

    work = new_work_dir()
    job = AnalysisProcess(analysis_command(sys.executable, ct_path, work / "out",
                                           AnalysisOptions(engine="classical", model="none"), work),
                          stop_file=work / "stop").start()
    while job.running and not any(wait_for in line.text for line in job.lines):
        job.poll()
        time.sleep(0.01)
    start = time.perf_counter()
    job.cancel()
    return time.perf_counter() - start


def child_overhead(phantom) -> tuple[float, float]:
    from EmphysemaXAILib.mrml.app import bootstrap
    from EmphysemaXAILib.mrml.module_logic import finish_analysis, launch_analysis
    from EmphysemaXAILib.mrml.scene_export import build_case_scene
    from EmphysemaXAILib.mrml.volumes import volume_node_from_ct
    from EmphysemaXAILib.options import AnalysisOptions
    from EmphysemaXAILib.pipeline import analyze_case

    options = AnalysisOptions(engine="classical", model="none")
    scene, app_logic = bootstrap(fresh=True)
    node = volume_node_from_ct(scene, phantom.ct, "CT")
    start = time.perf_counter()
    build_case_scene(analyze_case(phantom.ct, options), scene, app_logic, ct_node=node)
    here = time.perf_counter() - start
    start = time.perf_counter()
    run = launch_analysis(node, None, options, python=sys.executable)
    run.process.wait()
    finish_analysis(run, scene, app_logic)
    child = time.perf_counter() - start
    return here, child


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="300,512,512", help="attribution volume z,y,x for the slider figure")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    import SimpleITK as sitk

    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

    uncached, cached = slider(shape)
    print(f"attribution slider tick on {shape[2]} x {shape[1]} x {shape[0]} float32: "
          f"{uncached * 1000:.1f} ms from the voxels, {cached * 1000:.2f} ms from the cached range "
          f"({uncached / max(cached, 1e-9):.0f}x)")
    phantom = generate_phantom(PhantomParams(size="medium", seed=3, extent_pct=12, pattern="mixed"))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "ct.nrrd"
        sitk.WriteImage(phantom.ct.to_sitk(), str(path))
        for step in ("reading", "segmenting"):
            print(f"cancel while {step:<10}: process gone after {cancel_latency(path, step):.2f} s (goal <= 2 s)")
    here, child = child_overhead(phantom)
    print(f"medium phantom {phantom.ct.shape}: {here:.1f} s in this process, {child:.1f} s as a child process "
          f"(+{child - here:.1f} s for start-up, export and loading the results)")


if __name__ == "__main__":
    main()
