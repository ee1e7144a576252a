"""DICOM-native results of one case (``analyze --dicom-out``): ``write_dicom_results``.

Into ``<case>/dicom/`` (inside the case's atomic output folder):

- ``seg.dcm``: DICOM Segmentation (:mod:`~EmphysemaXAILib.io.dicom_seg`: lungs, airways, lobes,
  pattern classes);
- ``sr.dcm``: Comprehensive 3D SR, TID 1500 measurement report of summary.json's figures
  (:mod:`~EmphysemaXAILib.io.dicom_sr`), referencing the SEG's segments;
- ``ct/``: a derived CT series, only when the source slices are not exactly the analysis grid
  (non-DICOM input, resampled or tilt-corrected DICOM, skipped slices:
  :mod:`~EmphysemaXAILib.io.dicom_source`); else SEG and SR reference the source series itself.

All objects of a case share the patient module and StudyInstanceUID of what they reference
(the source study for DICOM input); patient identity is empty unless ``keep_identity``
(:func:`~EmphysemaXAILib.io.dicom_source.identity_attributes`). A case that quality control
excluded has no lungs: nothing is written and summary.json's ``dicom`` says why.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DICOM_DIR = "dicom"
SEG_FILE = "seg.dcm"
SR_FILE = "sr.dcm"
#: Segments the SR's region groups may reference (thirds have none).
REGION_SEGMENTS = ("whole", "right", "left", "rul", "rml", "rll", "lul", "lll")


def check_dicom_support(dicom: bool) -> None:
    """Refuse early, with what to install, when DICOM results are asked for without highdicom."""
    if dicom:
        from ..packages import is_installed, missing_package

        if not is_installed("highdicom"):
            raise missing_package("highdicom", "DICOM results (--dicom-out)", "run without --dicom-out")


def masks_on_input_grid(result) -> dict:
    """The case's label arrays on the input grid (the grid of the user's file): ``labels``,
    ``airways`` (bool or None), ``lobes`` and ``patterns`` (or None)."""
    ct, segmentation = result.ct, result.segmentation
    airways = segmentation.airways
    patterns = result.severity.pattern_labels if result.severity is not None else None
    return {"labels": ct.on_input_grid(segmentation.labels, labels=True),
            "airways": None if airways is None or not airways.any()
            else ct.on_input_grid(airways.view(np.uint8), labels=True) > 0,
            "lobes": None if segmentation.lobes is None else ct.on_input_grid(segmentation.lobes, labels=True),
            "patterns": None if patterns is None else ct.on_input_grid(patterns.astype(np.uint8), labels=True)}


def write_dicom_results(result, folder, summary: dict, keep_identity: bool = False) -> dict:
    """Write ``folder/dicom/`` for ``result`` (a CaseResult) whose summary.json object is
    ``summary``; returns the ``dicom`` entry of summary.json (files relative to ``folder``,
    ``referenced`` = ``source`` or ``derived``, the referenced series UID, the segment labels)."""
    from ..io.dicom_seg import build_segmentation, segment_specs
    from ..io.dicom_source import (
        DERIVED_CT_DIR,
        content_digest,
        first_source_header,
        identity_attributes,
        matching_source_headers,
        reference_header,
        result_uid,
        write_derived_ct,
    )
    from ..io.dicom_sr import build_report
    from ..io.pydicom_compat import save_dicom

    if result.qct is None or result.segmentation is None:
        return {"written": False, "reason": "excluded by quality control: no lungs, so no DICOM SEG / SR"}
    ct = result.ct
    out = Path(folder) / DICOM_DIR
    out.mkdir(parents=True, exist_ok=True)
    source = matching_source_headers(ct)
    template = source[0] if source else first_source_header(ct)
    identity = identity_attributes(template, keep_identity)
    source_key = str(template.SeriesInstanceUID) if template is not None else \
        "sha256:" + content_digest(ct.hu, json.dumps(ct.geometry_dict()))
    masks = masks_on_input_grid(result)
    results = {key: summary.get(key) for key in ("qct", "qct_severity", "severity", "segmentation")}
    digest = content_digest(*[m for m in masks.values() if m is not None], json.dumps(results, sort_keys=True),
                            json.dumps(identity, sort_keys=True))  # other identity, other objects, other UIDs
    if source:
        images = [reference_header(ds, identity) for ds in source]
    else:
        headers = write_derived_ct(ct, out / DERIVED_CT_DIR, source=template, identity=identity,
                                   source_key=source_key, results_digest=digest)
        images = [reference_header(ds, identity) for ds in headers]
    specs = segment_specs(masks["labels"], masks["airways"], masks["lobes"], masks["patterns"])
    version = (summary.get("versions") or {}).get("emphysema-xai") or "unknown"
    model = (summary.get("severity") or {}).get("model")
    seg = build_segmentation(images, specs, series_uid=result_uid(source_key, "seg-series", digest),
                             sop_uid=result_uid(source_key, "seg", digest), engine=result.segmentation.engine_used,
                             model=model, software_version=version)
    save_dicom(seg, out / SEG_FILE)
    numbers = {spec.key: n for n, spec in enumerate(specs, start=1) if spec.key in REGION_SEGMENTS}
    report = build_report(seg, images, summary, numbers, series_uid=result_uid(source_key, "sr-series", digest),
                          sop_uid=result_uid(source_key, "sr", digest), ct_series_uid=images[0].SeriesInstanceUID,
                          software_version=version)
    save_dicom(report, out / SR_FILE)
    return {"written": True, "seg": f"{DICOM_DIR}/{SEG_FILE}", "sr": f"{DICOM_DIR}/{SR_FILE}",
            "ct": None if source else f"{DICOM_DIR}/{DERIVED_CT_DIR}",
            "referenced": "source" if source else "derived",
            "referenced_series_uid": str(images[0].SeriesInstanceUID),
            "study_uid": str(images[0].StudyInstanceUID), "identity_kept": bool(keep_identity),
            "segments": [spec.label for spec in specs]}
