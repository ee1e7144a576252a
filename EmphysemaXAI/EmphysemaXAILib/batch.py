"""Writing analysis results: one case's folder (``write_case``); the cohort runner comes here too.

A front end (it may use the core, the report and the MRML layer): files are written into a
temporary folder beside the output and renamed at the end, so a failure leaves nothing behind.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import atomic_folder, write_atomic
from .errors import InputError
from .pipeline import CaseResult


def write_case(result: CaseResult, out_dir, *, report: bool = True, scene: bool = True,
               overwrite: bool = False) -> Path:
    """Write the analysis files into ``out_dir`` (refused when it exists unless ``overwrite``),
    through a temporary folder renamed at the end (see :func:`write_case_files`)."""
    out = Path(out_dir).resolve()
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists: choose another folder or pass --overwrite")
    check_scene_support(scene)
    with atomic_folder(out) as work:
        write_case_files(result, work, report=report, scene=scene)
    return out


def check_scene_support(scene: bool) -> None:
    """Refuse early, with what to do, when a scene is asked for and Slicer's MRML is missing."""
    if scene:
        try:
            import slicer  # noqa: F401
        except ImportError:
            raise InputError("a Slicer scene needs Slicer's MRML (install the 'headless' extra, "
                             "slicer-core, on Python 3.11) or pass --no-scene") from None


def write_case_files(result: CaseResult, folder, *, report: bool = True, scene: bool = True) -> None:
    """summary.json, and for a case that was analysed qct.csv, lung_labels.nrrd, laa_map.nrrd,
    report.html (unless ``report=False``), lungs.seg.nrrd and scene.mrb (unless ``scene=False``;
    the scene needs Slicer's MRML: the application's or the slicer-core wheel)."""
    from .phantom.io import save_label

    folder = Path(folder)
    if result.qct is not None:
        result.qct.dataframe().to_csv(folder / "qct.csv", index=False)
        save_label(result.segmentation.labels, result.ct, folder / "lung_labels.nrrd")
        save_label(result.qct.laa_map, result.ct, folder / "laa_map.nrrd")
        for method, explanation in result.explanations.items():
            save_label(explanation.volume, result.ct, folder / f"attribution_{method}.nrrd")
    views = None
    if scene:
        from .mrml.scene_export import export_case_scene

        views = export_case_scene(result, folder, render=report).get("views")
    if report:
        from .report import write_report

        write_report(result, folder / "report.html", views=views)
    (folder / "summary.json").write_text(json.dumps(result.summary(), indent=2))


# --------------------------------------------------------------------------- cohorts

IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
COHORT_COLUMNS = ("case_id", "source", "status", "error", "laa950_pct", "perc15_hu", "volume_l",
                  "qct_class", "severity_class", "extent_pct")


def _case_id(relative: Path, suffix: str = "") -> str:
    """A file-system-safe id from a path relative to the root (never from patient tags)."""
    text = relative.as_posix()
    for ext in IMAGE_SUFFIXES:
        if text.lower().endswith(ext):
            text = text[: -len(ext)]
            break
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text.replace("/", "__"))
    return (safe or "root") + suffix


def find_cases(root) -> list:
    """Every case under ``root``: each DICOM series (grouped per folder) and each image file.

    Returns dicts with ``case_id``, ``source`` (relative path), ``path`` and ``series_uid``.
    Unreadable DICOM-looking files stay inside their series' case (the reader reports them).
    """
    from .dicom_series import scan_folder

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; batch takes a folder of cases")
    cases = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and any(path.name.lower().endswith(ext) for ext in IMAGE_SUFFIXES):
            if path.name.lower().endswith(".raw") or path.name.startswith("."):
                continue
            relative = path.relative_to(root)
            cases.append({"case_id": _case_id(relative), "source": relative.as_posix(), "path": str(path),
                          "series_uid": None})
    series, _skipped = scan_folder(root)
    by_folder = {}
    for uid, items in series.items():
        for path, _ in items:
            by_folder.setdefault((path.parent, uid), 0)
            by_folder[(path.parent, uid)] += 1
    folders = {}
    for (folder, uid) in sorted(by_folder):
        folders.setdefault(folder, []).append(uid)
    for folder, uids in sorted(folders.items()):
        relative = folder.relative_to(root)
        for index, uid in enumerate(uids):
            suffix = f"-series{index + 1}" if len(uids) > 1 else ""
            cases.append({"case_id": _case_id(relative, suffix), "source": relative.as_posix() or ".",
                          "path": str(folder), "series_uid": uid})
    return sorted(cases, key=lambda c: c["case_id"])


def _thumbnail(result, size: int = 96):
    """(image, lung mask) of the axial slice with the most lung, decimated to about ``size`` px."""
    hu = result.ct.hu
    labels = result.segmentation.labels if result.segmentation is not None else None
    k = int(np.argmax((labels > 0).sum(axis=(1, 2)))) if labels is not None else hu.shape[0] // 2
    step = max(1, max(hu.shape[1:]) // size)
    image = np.asarray(hu[k, ::step, ::step], dtype=np.int16)
    mask = (labels[k, ::step, ::step] > 0) if labels is not None else np.zeros(image.shape, bool)
    return image, mask


def run_case(case: dict, out_root: str, options: dict) -> dict:
    """Analyse one case into ``out_root/cases/<case_id>``; never raises (a failure is a row)."""
    from .pipeline import analyze_case

    row = dict.fromkeys(COHORT_COLUMNS)
    row.update(case_id=case["case_id"], source=case["source"])
    thumb = None
    try:
        from .config import load_settings

        result = analyze_case(case["path"], series_uid=case["series_uid"], engine=options.get("engine", "auto"),
                              settings=load_settings(options.get("config")), model=options.get("model", "auto"),
                              device=options.get("device", "auto"))
        write_case(result, Path(out_root) / "cases" / case["case_id"], report=options.get("report", True),
                   scene=options.get("scene", True), overwrite=True)
        thumb = _thumbnail(result)
        row = _cohort_row(case, result.summary())
    except Exception as error:  # noqa: BLE001 - a failing case is recorded, the others go on
        row.update(status="failed", error=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    return {"row": row, "thumbnail": thumb}


def _resumed(case: dict, out_root: Path) -> dict | None:
    """The row of a case a previous run finished (its summary.json exists), else None."""
    summary_path = out_root / "cases" / case["case_id"] / "summary.json"
    if not summary_path.is_file():
        return None
    return _cohort_row(case, json.loads(summary_path.read_text()))


def _cohort_row(case: dict, summary: dict) -> dict:
    """The cohort.csv row of a finished case from its summary (summary.json content)."""
    row = dict.fromkeys(COHORT_COLUMNS)
    row.update(case_id=case["case_id"], source=case["source"])
    if summary["qc"]["excluded"]:
        row.update(status="excluded", error="; ".join(summary["qc"]["errors"]))
        return row
    whole = next(r for r in summary["qct"]["regions"] if r["region"] == "whole")
    qct_severity, model = summary["qct_severity"], summary.get("severity")
    row.update(status="ok", laa950_pct=whole["laa950_pct"], perc15_hu=whole["perc15_hu"],
               volume_l=whole["volume_l"], qct_class=qct_severity["class"],
               severity_class=model["class"] if model else None,
               extent_pct=model["extent_pct"] if model else qct_severity["extent_pct"])
    return row


def run_batch(root, out_dir, *, workers: int = 1, resume: bool = False, report: bool = True,
              scene: bool = True, engine: str = "auto", progress: bool = True, config=None,
              model="auto", device: str = "auto") -> list:
    """Analyse every case under ``root`` into ``out_dir``; write ``cohort.csv`` and
    ``qc_montage.png``; return the cohort rows. Failing cases are rows with their reason."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    out = Path(out_dir).resolve()
    cases = find_cases(root)
    if not cases:
        raise InputError(f"{root}: no DICOM series or image file found")
    out.mkdir(parents=True, exist_ok=True)
    options = {"report": report, "scene": scene, "engine": engine, "config": str(config) if config else None,
               "model": str(model) if model not in (None, "auto") else model, "device": device}
    rows, thumbs, todo = {}, {}, []
    for case in cases:
        done = _resumed(case, out) if resume else None
        if done is not None:
            rows[case["case_id"]] = done
        else:
            todo.append(case)
    bar = tqdm(total=len(cases), initial=len(rows), desc="cases", unit="case", disable=not progress)
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_case, case, str(out), options) for case in todo]
            for future in as_completed(futures):
                outcome = future.result()
                rows[outcome["row"]["case_id"]] = outcome["row"]
                thumbs[outcome["row"]["case_id"]] = outcome["thumbnail"]
                bar.update(1)
    else:
        for case in todo:
            outcome = run_case(case, str(out), options)
            rows[case["case_id"]] = outcome["row"]
            thumbs[case["case_id"]] = outcome["thumbnail"]
            bar.update(1)
    bar.close()
    ordered = [rows[c["case_id"]] for c in cases]
    _write_cohort(ordered, out / "cohort.csv")
    if thumbs:
        _montage(ordered, thumbs, out / "qc_montage.png")
    return ordered


def _write_cohort(rows, path: Path) -> None:
    import pandas as pd

    write_atomic(path, lambda tmp: pd.DataFrame(rows, columns=list(COHORT_COLUMNS)).to_csv(tmp, index=False))


def _montage(rows, thumbs, path: Path) -> None:
    """One tile per case of this run: the axial slice with the most lung and its outline, or the
    failure in red; cases resumed from an earlier run have no thumbnail and are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["case_id"] in thumbs]
    columns = min(6, max(1, len(shown)))
    lines = int(np.ceil(len(shown) / columns))
    fig, axes = plt.subplots(lines, columns, figsize=(2.2 * columns, 2.4 * lines), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), shown):
        if thumbs[row["case_id"]] is None:
            ax.text(0.5, 0.5, (row["error"] or "")[:60], ha="center", va="center", wrap=True,
                    fontsize=6, color="#a4161a", transform=ax.transAxes)
        else:
            image, mask = thumbs[row["case_id"]]
            ax.imshow(image, cmap="gray", vmin=-1200, vmax=200)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="#4cc9f0", linewidths=0.8)
        color = {"ok": "black", "excluded": "#e76f51", "failed": "#a4161a"}[row["status"]]
        ax.set_title(f"{row['case_id'][:22]}\n{row['status']} {row['qct_class'] or ''}", fontsize=7, color=color)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)
