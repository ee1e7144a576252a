"""One case's output folder: ``write_case`` (atomic) and the files in it (``write_case_files``).

A front end (it may use the core, the report and the MRML layer): files are written into a
temporary folder beside the output and renamed at the end, so a failure leaves nothing behind.
File names and keys: ``docs/contracts.md``.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ..analysis.patterns import PATTERN_CSV, PATTERN_FILE, pattern_columns, pattern_rows
from ..errors import InputError
from ..io.atomic import atomic_folder, refuse_existing
from ..io.csv_table import write_csv
from ..pipeline import CaseResult
from .case_layers import AIRWAYS_FILE


def write_case(result: CaseResult, out_dir, *, report: bool = True, scene: bool = True,
               overwrite: bool = False, dicom: bool = False, keep_identity: bool = False) -> Path:
    """Write the analysis files into ``out_dir`` (refused when it exists unless ``overwrite``),
    through a temporary folder renamed at the end (see :func:`write_case_files`)."""
    from .dicom_results import check_dicom_support

    out = Path(out_dir).resolve()
    refuse_existing(out, overwrite)
    check_scene_support(scene)
    check_report_support(report)
    check_dicom_support(dicom)
    with atomic_folder(out, overwrite=overwrite) as work:
        write_case_files(result, work, report=report, scene=scene, dicom=dicom, keep_identity=keep_identity)
    return out


def check_scene_support(scene: bool) -> None:
    """Refuse early, with what to do, when a scene is asked for and Slicer's MRML is missing."""
    if scene:
        try:
            import slicer  # noqa: F401
        except ImportError:
            raise InputError("a Slicer scene needs Slicer's MRML (install the 'headless' extra, "
                             "slicer-core, on Python 3.11) or pass scene=False (--no-scene)") from None


def has_matplotlib() -> bool:
    """Whether matplotlib, which draws the report's figures and the batch montage, is installed
    (3D Slicer does not ship it)."""
    return importlib.util.find_spec("matplotlib") is not None


def check_report_support(report: bool) -> None:
    """Refuse early, with what to do, when report.html is asked for and matplotlib is missing."""
    if report and not has_matplotlib():
        raise InputError("report.html needs matplotlib, which is not installed (3D Slicer does not ship it): "
                         "install it (pip install matplotlib) or pass report=False (--no-report)")


def write_case_files(result: CaseResult, folder, *, report: bool = True, scene: bool = True,
                     dicom: bool = False, keep_identity: bool = False) -> None:
    """summary.json, and for a case that was analysed qct.csv, lung_labels.nrrd, airways.nrrd (when
    airways were found), laa_map.nrrd,
    (when a pattern model ran) pattern_map.nrrd and patterns.csv, report.html (unless
    ``report=False``), lungs.seg.nrrd and scene.mrb (unless ``scene=False``; the scene needs
    Slicer's MRML: the application's or the slicer-core wheel); with ``dicom`` the DICOM SEG, SR
    (and derived CT) in ``dicom/`` (:mod:`.dicom_results`; ``keep_identity``: the source's patient
    name, ID, birth date and sex in them), described by summary.json's ``dicom``."""
    from ..phantom.io import save_label

    release_free_memory()  # what the analysis freed, before the scene's volumes are allocated
    folder = Path(folder)
    if result.qct is not None:
        result.qct.write_csv(folder / "qct.csv")
        save_label(result.segmentation.labels, result.ct, folder / "lung_labels.nrrd")
        save_label(result.qct.laa_map, result.ct, folder / "laa_map.nrrd")
        if result.segmentation.airways is not None and result.segmentation.airways.any():
            save_label(result.segmentation.airways.view(np.uint8), result.ct, folder / AIRWAYS_FILE)
        pattern_labels = result.severity.pattern_labels if result.severity is not None else None
        if pattern_labels is not None:
            save_label(pattern_labels.astype(np.uint8), result.ct, folder / PATTERN_FILE)
            write_csv(folder / PATTERN_CSV, pattern_rows(result.severity.summary), pattern_columns())
        for method, explanation in result.explanations.items():
            save_label(explanation.volume, result.ct, folder / f"attribution_{method}.nrrd")
    views = None
    if scene:
        from ..mrml.scene_export import export_case_scene

        views = export_case_scene(result, folder, render=report).get("views")
        release_free_memory()
    if report:
        from .report import write_report

        write_report(result, folder / "report.html", views=views)
    summary = result.summary()
    if dicom:
        from .dicom_results import write_dicom_results

        summary["dicom"] = write_dicom_results(result, folder, summary, keep_identity=keep_identity)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))


def release_free_memory() -> bool:
    """Give the memory the process has freed back to the system: glibc keeps freed blocks of
    the heap (after a full-size analysis, about 0.9 GB of a 2.9 GB resident set) unless asked
    (``malloc_trim``). True when done; False where there is no glibc (macOS, Windows, musl)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)
    return True


def zone_note(slices: int) -> str | None:
    """For a one- or two-slice case: the upper / middle / lower values are not the whole lung's."""
    if slices is None or slices > 2:
        return None
    return (f"only {slices} slice{'s' if slices > 1 else ''}: the zone values (upper / middle / lower thirds) "
            f"come from {'this slice' if slices == 1 else 'these two slices'} and do not describe the whole lung")
