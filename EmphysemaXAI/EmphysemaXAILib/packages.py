"""Which optional Python packages a run needs, and which of them this Python lacks.

The core runs on what 3D Slicer ships (numpy, scipy, SimpleITK, pydicom); everything else is
optional and imported only by the step that uses it:

- ``lungmask`` (and torch): the lungmask engine; ``engine="auto"`` falls back to the classical
  engine without it (and needs it only when lungmask's weights are on this machine: auto never
  runs lungmask without them), ``engine="lungmask"`` stops with a one-line error;
- ``torch``: the severity CNN; ``model="auto"`` measures QCT only without it, a model folder
  given explicitly stops with a one-line error;
- ``captum`` (ig, occlusion, smoothgrad) and ``monai`` (gradcampp): explanations; a method whose
  package is missing is skipped with a warning, the others still run (``gradcam`` and
  ``attention``, the Slicer module's defaults, need torch alone);
- ``highdicom`` (pydicom >= 2.4; inside Slicer 5.10, whose pydicom 2.4.4 stays, pip resolves 0.22.x):
  the DICOM SEG and SR of ``--dicom-out`` (required when asked for);
- ``matplotlib`` (``report.html``; a batch's montage) and ``tqdm`` (a batch's progress bar):
  outputs; ``distributed`` (dask.distributed): a batch on several worker processes or machines
  (one worker runs the cases in the calling process without it). The case files themselves
  (CSV, NRRD, JSON) need nothing beyond what Slicer ships.

:func:`required_packages` says what given options need, each :class:`Need` marked ``required``
(the options explicitly ask for the feature) or not (the run degrades without it, e.g. ``auto``);
:func:`missing_for` keeps those that do not import here. This module imports nothing heavy: the
Slicer module and the command line call it before any dependency is installed.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

from .errors import MissingPackage
from .options import MODEL_AUTO, AnalysisOptions

#: pip requirement of each optional package: the ranges of pyproject.toml and of the Slicer
#: module's Resources/requirements.txt (Testing/test_packages.py keeps the three equal). The
#: minimums are the first releases installable beside numpy 2 (Slicer 5.10 ships numpy 2.0.2):
#: monai 1.4 and captum 0.8 require numpy < 2; monai 1.5.1 needs torch >= 2.4.1.
PIP_REQUIREMENTS = {
    "torch": "torch>=2.4.1,<=2.14.1",
    "lungmask": "lungmask>=0.2.22",
    "monai": "monai>=1.5.1",
    "captum": "captum>=0.9",
    "matplotlib": "matplotlib>=3.8",
    "tqdm": "tqdm>=4.66",
    "highdicom": "highdicom>=0.22",
    # dask.distributed (pulls dask); a batch on Dask (--workers > 1, --scheduler tcp://...)
    "distributed": "distributed>=2024.8",
}
#: explanation method -> the package it needs beyond torch (None: torch alone)
METHOD_PACKAGES = {"gradcam": None, "gradcampp": "monai", "ig": "captum", "attention": None,
                   "occlusion": "captum", "smoothgrad": "captum"}


@dataclass(frozen=True)
class Need:
    """One package the options need.

    ``required``: an explicitly chosen feature needs it (engine lungmask, a model folder, writing
    files); else the run degrades without it (``auto``; an explanation method is skipped with a
    warning and the others run).
    ``without``: what happens when it is missing, for messages.
    """

    package: str
    requirement: str              # pip requirement (PIP_REQUIREMENTS)
    required: bool
    features: tuple[str, ...]     # what needs it, e.g. ("lungmask engine (auto)", "severity CNN")
    without: str


def is_installed(name: str) -> bool:
    """True when ``name`` imports here (found without importing it; a ``None`` entry in
    ``sys.modules``, which makes ``import name`` fail, counts as missing)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_package(package: str, feature: str, alternative: str = "") -> MissingPackage:
    """The one-line error of an explicitly chosen ``feature`` whose ``package`` is missing."""
    requirement = PIP_REQUIREMENTS.get(package, package)
    other = f", or {alternative}" if alternative else ""
    return MissingPackage(package, f"{feature} needs the Python package {package}, which is not installed: install "
                                   f"it (pip install '{requirement}'; in 3D Slicer the EmphysemaXAI module's "
                                   f"dependency installer){other}")


def _entries(options: AnalysisOptions, report: bool, batch: bool, dicom: bool = False,
             dask: bool = False) -> list:
    """(package, required, feature, without) for every need of ``options``, in install order."""
    options = options.resolved()
    out = []
    # engine auto uses lungmask only with its weights on this machine: without them, offering the
    # package would install something the run never uses (issue 26)
    if options.engine == "lungmask" or (options.engine == "auto" and _lungmask_weights_here(options)):
        explicit = options.engine == "lungmask"
        without = "the run stops (engine lungmask)" if explicit else "the classical engine segments the lungs"
        feature = "lungmask engine" + ("" if explicit else " (auto)")
        out += [("torch", explicit, feature, without), ("lungmask", explicit, feature, without)]
    model = options.model_folder
    if model is not None:
        explicit = model != MODEL_AUTO
        out.append(("torch", explicit, "severity CNN" + ("" if explicit else " (auto)"),
                    "the run stops (model folder given)" if explicit else "QCT only, no CNN severity grade"))
    for method in options.explain or ():
        # an explanation whose package is missing is skipped with a warning, the run goes on
        out.append(("torch", False, f"explanation {method}", f"no {method} explanation"))
        if METHOD_PACKAGES[method]:
            out.append((METHOD_PACKAGES[method], False, f"explanation {method}",
                        f"the {method} explanation is skipped (the other methods run)"))
    if report:
        out.append(("matplotlib", True, "report.html", "the report cannot be written (--no-report runs)"))
    if dicom:
        out.append(("highdicom", True, "DICOM SEG + SR", "no DICOM results (run without --dicom-out)"))
    if batch:
        if not report:
            out.append(("matplotlib", False, "batch QC montage", "no qc_montage.png"))
        out.append(("tqdm", False, "batch progress bar", "one progress line per case"))
        if dask:
            out.append(("distributed", True, "batch on Dask (workers > 1 or a scheduler address)",
                        "the batch stops (run it with one worker)"))
    return out


def _lungmask_weights_here(options: AnalysisOptions) -> bool:
    from .segmentation.lungmask_engine import weights_found

    return weights_found("R231", options.lungmask_weights)


def required_packages(options: AnalysisOptions | None = None, *, report: bool = False,
                      batch: bool = False, dicom: bool = False, dask: bool = False) -> list[Need]:
    """The optional packages a run with ``options`` needs, one :class:`Need` per package (torch
    first: the others are installed next to it).

    Args:
        options: the run's options (``None``: the defaults: engine auto, model auto).
        report: it writes ``report.html`` (matplotlib).
        batch: it is a cohort run (its montage: matplotlib; its progress bar: tqdm; both optional).
        dicom: it writes DICOM SEG + SR (highdicom, required).
        dask: the cohort runs on Dask (several workers, or a scheduler address): dask.distributed,
            required.
    """
    merged: dict = {}
    for package, required, feature, without in _entries(options or AnalysisOptions(), report, batch, dicom,
                                                        dask):
        entry = merged.setdefault(package, {"required": False, "features": [], "without": []})
        entry["required"] |= required
        if feature not in entry["features"]:
            entry["features"].append(feature)
        if without not in entry["without"]:
            entry["without"].append(without)
    return [Need(package, PIP_REQUIREMENTS[package], entry["required"], tuple(entry["features"]),
                 "; ".join(entry["without"])) for package, entry in merged.items()]


def missing_for(options: AnalysisOptions | None = None, *, report: bool = False,
                batch: bool = False, dicom: bool = False, dask: bool = False,
                installed=is_installed) -> list[Need]:
    """The :func:`required_packages` of ``options`` that ``installed(name)`` says are missing here."""
    return [need for need in required_packages(options, report=report, batch=batch, dicom=dicom, dask=dask)
            if not installed(need.package)]


def describe_needs(needs) -> str:
    """One line per need: ``lungmask>=0.2.22 (lungmask engine (auto); without it: ...)``."""
    return "\n".join(f"{n.requirement} ({', '.join(n.features)}; {'required' if n.required else 'optional'}; "
                     f"without it: {n.without})" for n in needs)


__all__ = ["METHOD_PACKAGES", "PIP_REQUIREMENTS", "Need", "describe_needs", "is_installed", "missing_for",
           "missing_package", "required_packages"]
