"""Writing analysis results: one case's folder (``write_case``); the cohort runner comes here too.

A front end (it may use the core, the report and the MRML layer): files are written into a
temporary folder beside the output and renamed at the end, so a failure leaves nothing behind.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .errors import InputError


def write_case(result: CaseResult, out_dir, *, report: bool = True, scene: bool = True,
               overwrite: bool = False) -> Path:
    """Write the analysis files into ``out_dir`` (refused when it exists unless ``overwrite``).

    Files: summary.json, and for a case that was analysed qct.csv, lung_labels.nrrd,
    laa_map.nrrd, report.html (unless ``report=False``), lungs.seg.nrrd and scene.mrb (unless
    ``scene=False``; the scene needs Slicer's MRML: the application's or the slicer-core wheel).
    """
    from .phantom.io import save_label

    out = Path(out_dir).resolve()
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists: choose another folder or pass --overwrite")
    if scene:
        try:
            import slicer  # noqa: F401
        except ImportError:
            raise InputError("a Slicer scene needs Slicer's MRML (install the 'headless' extra, "
                             "slicer-core, on Python 3.11) or pass --no-scene") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        summary = result.summary()
        if result.qct is not None:
            result.qct.dataframe().to_csv(work / "qct.csv", index=False)
            save_label(result.segmentation.labels, result.ct, work / "lung_labels.nrrd")
            save_label(result.qct.laa_map, result.ct, work / "laa_map.nrrd")
        if report:
            from .report import write_report

            write_report(result, work / "report.html")
        if scene:
            from .mrml.scene_export import export_case_scene

            export_case_scene(result, work)
        (work / "summary.json").write_text(json.dumps(summary, indent=2))
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out
