"""The case pipeline: ``analyze_case(input, options) -> CaseResult``: read, quality control,
segment, measure (QCT), grade (the CNN) and explain.

Each step is timed; ``progress(step, fraction, message)`` is called before every step and a
``cancel()`` callable is checked between steps (raising :class:`Cancelled`). A case that
quality control excludes stops after QC with ``excluded=True``. Settings come in one
:class:`~EmphysemaXAILib.options.AnalysisOptions`. Writing the outputs (files, report, Slicer
scene) is a front end's job: :func:`EmphysemaXAILib.app.case_files.write_case` writes the files
of ``docs/contracts.md`` through a temporary folder, so a failure leaves nothing behind.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import EmphysemaXAIError, InputError
from .notices import NOT_CLINICAL
from .options import AnalysisOptions
from .packages import PIP_REQUIREMENTS, missing_package

if TYPE_CHECKING:  # types only: the modules are imported when a step runs (torch stays optional)
    from .analysis.qc import QCReport
    from .analysis.qct import QCTResult
    from .explain.assemble import Explanation
    from .model.case_extent import SeverityResult
    from .segmentation import Segmentation
    from .volume import CTVolume

STEPS = ("read", "qc", "segment", "qct", "severity", "explain")


class Cancelled(EmphysemaXAIError):
    """The caller cancelled the analysis between two steps."""


@dataclass
class CaseResult:
    """Everything one analysis produced (plain data; the MRML layer turns it into nodes)."""

    input_path: str                                  # the input as given, or "(in memory)"
    ct: CTVolume                                     # on the canonical axial grid
    qc: QCReport
    segmentation: Segmentation | None = None         # None when excluded
    qct: QCTResult | None = None                     # None when excluded
    severity: SeverityResult | None = None           # None without a model
    explanations: dict[str, Explanation] = field(default_factory=dict)   # method -> attribution
    timings_s: dict[str, float] = field(default_factory=dict)           # step -> seconds
    warnings: list[str] = field(default_factory=list)

    @property
    def excluded(self) -> bool:
        return self.qc.excluded

    def summary(self) -> dict:
        """The ``summary.json`` object (``docs/contracts.md``); never holds patient identity."""
        ct = self.ct
        out = {
            "input": {"kind": ct.kind, **ct.input_geometry_dict(), "acquisition": dict(ct.acquisition),
                      "reoriented": None if ct.orientation is None or ct.orientation.identity
                      else ct.orientation.describe()},
            "qc": {"errors": self.qc.errors, "warnings": self.qc.warnings, "measures": self.qc.measures,
                   "profile": self.qc.profile, "excluded": self.excluded},
            "segmentation": self.segmentation.as_dict() if self.segmentation is not None else None,
            "qct": {"regions": self.qct.regions, "noise_hu": self.qct.noise_hu,
                    "calibration": self.qct.calibration} if self.qct else None,
            "qct_severity": self.qct.qct_severity if self.qct else None,
            "severity": self.severity.summary if self.severity is not None else None,
            "explanations": {m: e.summary(f"attribution_{m}.nrrd") for m, e in self.explanations.items()},
            "timings_s": self.timings_s,
            "versions": versions(),
            "warnings": self.warnings,
            "disclaimer": NOT_CLINICAL,
        }
        return out


_PREDICTORS: dict = {}


def _predictor(model, device: str, warnings: list):
    """The predictor for ``model`` (cached per model and device; :func:`.model.predictors.open_predictor`), or None.

    ``model="auto"`` without torch (or without the shipped checkpoint) gives None and a warning:
    QCT still runs. A model folder given explicitly without torch raises
    :class:`~EmphysemaXAILib.errors.MissingPackage` (one line: what to install)."""
    if model is None:
        return None
    auto = model == "auto"
    try:
        from .model import open_predictor
        from .model.checkpoint import WEIGHTS_FILE, model_dir, shipped_available

        if auto and not shipped_available():
            warnings.append("no severity model: the shipped checkpoint is missing from this installation")
            return None
        weights = model_dir(None if auto else model) / WEIGHTS_FILE
        key = (str(weights.resolve()), weights.stat().st_mtime_ns if weights.exists() else None, device)
        if key not in _PREDICTORS:
            _PREDICTORS[key] = open_predictor(None if auto else model, device)
        return _PREDICTORS[key]
    except ImportError as error:  # torch (or a package the network needs) not installed: QCT still runs
        package = (error.name or "torch").split(".")[0]
        if not auto:
            raise missing_package(package, f"the severity model {model}", "run without a model (model none)") \
                from None
        warnings.append(f"severity CNN skipped: the Python package {package} is not installed, so the case has "
                        f"QCT measures but no CNN severity grade ({PIP_REQUIREMENTS.get(package, package)} enables it)")
        return None


#: A lung mask smaller than this share of the air inside the body (QC's lung air) is suspicious.
MIN_MASK_TO_LUNG_AIR = 0.6


def _mask_against_lung_air(segmentation, ct, measures: dict) -> list:
    """A loud warning when the lung mask holds far less than the air quality control found
    inside the body (lungs + airways; about 1.0 on whole-chest scans): a lung missed by the
    engine or cut from a user's mask is never measured silently. Volumes of 10+ slices only
    (QC's coarse grid is too coarse along z for thin inputs)."""
    air_ml = measures.get("lung_air_volume_ml")
    if not air_ml or ct.shape[0] < 10:
        return []
    mask_ml = float((segmentation.labels > 0).sum()) * float(np.prod(ct.spacing)) / 1000.0
    if mask_ml >= MIN_MASK_TO_LUNG_AIR * air_ml:
        return []
    return [f"LUNG MASK TOO SMALL: the {segmentation.engine_used} lung mask holds {mask_ml:.0f} ml but the scan has "
            f"{air_ml:.0f} ml of air inside the body ({100 * mask_ml / air_ml:.0f}%): a lung may be missing; "
            "check the overlay before using the figures"]


def versions() -> dict:
    """Versions of the package and of the libraries whose behaviour shapes the results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("emphysema-xai", "numpy", "scipy", "SimpleITK", "pydicom", "torch", "lungmask"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def analyze_case(path, options: AnalysisOptions | None = None, *, lung_mask=None, progress=None,
                 cancel=None, acquisition: dict | None = None) -> CaseResult:
    """Read, check, segment, measure, grade and explain one case.

    Args:
        path: DICOM folder or file, NRRD / NIfTI / MHA, or a CTVolume already in memory (for
            example from a Slicer volume node).
        options: the run's :class:`~EmphysemaXAILib.options.AnalysisOptions` (fields not given take
            the defaults; build them with :func:`~EmphysemaXAILib.options.build_options` to apply
            a config file). ``options.model``: ``"auto"`` (the shipped model when it and torch are
            installed, else a warning and QCT only), ``"none"`` (no model step) or a model folder
            (without torch: :class:`~EmphysemaXAILib.errors.MissingPackage`). An explanation method
            whose package (captum, monai) is missing is skipped with a warning.
        lung_mask: the user's lungs instead of an engine: a label map file on the CT grid, or a
            (z, y, x) array on the grid of the CT as given (1 right, 2 left).
        progress: ``progress(step, fraction, message)``; cancel: returns True to stop (checked
            before every step; raises :class:`Cancelled`).
        acquisition: acquisition facts known from elsewhere (kernel, kVp, mAs, ... as
            :func:`~EmphysemaXAILib.io.dicom_header.acquisition_facts` gives them, e.g. from the
            DICOM files behind a volume exported from Slicer), used where the input has none.
    """
    options = (options or AnalysisOptions()).resolved()
    model, explain, explain_target = options.model_folder, options.explain, options.explain_target
    qct_config = options.qct_config()
    from .analysis.calibration import calibration_from_qc
    from .analysis.qc import check_lung_cut, run_qc
    from .analysis.qct import measure_qct
    from .io.read import read_ct
    from .segmentation import Segmentation, case_airways, segment_lungs, user_lung_labels

    timings: dict = {}

    def within(name: str, index: int):
        """``progress`` inside step ``index``: (fraction of the step done, message)."""
        if progress is None:
            return None
        return lambda fraction, message: progress(name, (index + min(max(fraction, 0.0), 1.0)) / len(STEPS), message)

    def step(name: str, index: int, message: str):
        if cancel is not None and cancel():
            raise Cancelled(f"analysis cancelled before {name}")
        if progress is not None:
            progress(name, index / len(STEPS), message)
        return time.perf_counter()

    from .io.memory import check_case_memory, input_voxels
    from .io.orientation import canonical
    from .volume import CTVolume

    # a scan too large for the memory available is refused from its header, before any voxel is read
    size = path.hu.shape[::-1] if isinstance(path, CTVolume) else input_voxels(path, options.series_uid)
    check_case_memory(str(path) if not isinstance(path, CTVolume) else "the volume", size, model=model is not None,
                      explain=bool(explain), max_memory=options.max_memory)
    start = step("read", 0, f"reading {path if not isinstance(path, CTVolume) else 'the volume'}")
    # every step works on the canonical axial grid; outputs are mapped back when written
    ct = canonical(path) if isinstance(path, CTVolume) else read_ct(path, series_uid=options.series_uid)
    for key, value in (acquisition or {}).items():
        if ct.acquisition.get(key) is None:
            ct.acquisition[key] = value
    user_labels = user_lung_labels(lung_mask, ct) if lung_mask is not None else None  # checked before any work
    timings["read"] = round(time.perf_counter() - start, 3)
    start = step("qc", 1, "quality control")
    qc = run_qc(ct, profile=options.qc_profile)
    timings["qc"] = round(time.perf_counter() - start, 3)
    result = CaseResult(input_path=str(path) if not isinstance(path, CTVolume) else "(in memory)", ct=ct,
                        qc=qc, timings_s=timings)
    if qc.excluded:
        result.warnings.extend(qc.errors)
        return result
    start = step("segment", 2, "segmenting the lungs")
    if user_labels is not None:
        # the user's lungs as given; the airways found beside them, for display only
        segmentation = Segmentation(user_labels, "file", airways=case_airways(ct).lumen)
    else:
        segmentation = segment_lungs(ct, engine=options.engine, lungmask_weights=options.lungmask_weights,
                                     fill_weights=options.lungmask_fill_weights, lobes=options.lobes,
                                     progress=within("segment", 2))
    timings["segment"] = round(time.perf_counter() - start, 3)
    result.segmentation = segmentation
    result.warnings.extend(segmentation.warnings)
    if not (segmentation.labels > 0).any():
        raise InputError(f"{path}: no lung found by the {segmentation.engine_used} engine; check the "
                         "scan or give a lung mask")
    result.warnings.extend(_mask_against_lung_air(segmentation, ct, qc.measures))
    check_lung_cut(ct, segmentation.labels, qc)  # QC's word on a cut lung, whatever drew the mask
    start = step("qct", 3, "measuring densitometry")
    calibration = calibration_from_qc(qc.measures, result.warnings)
    result.qct = measure_qct(ct, segmentation.labels, lobes=segmentation.lobes, config=qct_config,
                             noise_hu=qc.measures.get("noise_hu"), calibration=calibration)
    timings["qct"] = round(time.perf_counter() - start, 3)
    predictor = _predictor(model, options.device, result.warnings)
    if explain and explain_target != "emphysema" and predictor is not None \
            and not hasattr(predictor, "classify_images"):
        raise InputError(f"explain_target {explain_target}: the severity model has no pattern outputs; "
                         "use a pattern model or explain emphysema")
    if predictor is not None:
        start = step("severity", 4, "grading severity with the CNN")
        cutpoints = qct_config.severity_cutpoints
        options = {"calibration": calibration} if hasattr(predictor, "classify_images") else {}
        result.severity = predictor.predict(ct, segmentation.labels, segmentation.lobes, cutpoints=cutpoints,
                                            progress=within("severity", 4), **options)
        timings["severity"] = round(time.perf_counter() - start, 3)
        result.warnings.extend(result.severity.summary["notes"])
    if explain and predictor is not None:
        from .explain.assemble import explain_case

        start = step("explain", 5, f"explaining the model ({', '.join(explain)})")
        result.explanations = explain_case(predictor.model, result.severity, ct, segmentation.labels, explain,
                                           lobes=segmentation.lobes, target=explain_target, warnings=result.warnings,
                                           fusion=predictor.fusion, progress=within("explain", 5))
        timings["explain"] = round(time.perf_counter() - start, 3)
    if progress is not None:
        progress("done", 1.0, "done")
    return result
