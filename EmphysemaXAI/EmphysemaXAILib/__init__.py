"""EmphysemaXAI: explainable emphysema assessment on chest CT, headless (the core of the 3D
Slicer extension). Research and teaching use only: not a medical device.

The curated API (imported on first use, so ``import EmphysemaXAILib.options`` stays light)::

    from EmphysemaXAILib import analyze_case, build_options
    result = analyze_case("chest_ct/", build_options("settings.toml", engine="classical"))
    result.qct.region("whole")["laa950_pct"]

Layout: ``io`` (reading, writing, atomic outputs), ``analysis`` (QC, calibration, regions, QCT,
severity), ``segmentation``, ``model``, ``explain``, ``embed`` / ``linear`` (the second method),
``phantom`` (synthetic CT with truth), ``pipeline`` + ``options`` (one case, its settings),
``app`` (case folders, cohorts, report), ``mrml`` (Slicer scene), ``cli`` (command line).
The core (everything but ``mrml``, ``app``, ``cli``) imports no ``slicer`` / ``vtk`` / ``qt``.
"""
__version__ = "0.1.0"

#: public name -> module that defines it
_API = {
    "analyze_case": "pipeline", "CaseResult": "pipeline", "Cancelled": "pipeline", "NOT_CLINICAL": "notices",
    "AnalysisOptions": "options", "build_options": "options", "options_from_toml": "options",
    "read_ct": "io.read", "CTVolume": "volume",
    "run_qc": "analysis.qc", "QCReport": "analysis.qc",
    "segment_lungs": "segmentation", "Segmentation": "segmentation",
    "measure_qct": "analysis.qct", "QCTConfig": "analysis.qct", "QCTResult": "analysis.qct",
    "run_batch": "app.batch", "write_case": "app.case_files",
    "EmphysemaXAIError": "errors", "InputError": "errors", "ExcludedError": "errors",
    "MissingPackage": "errors", "required_packages": "packages", "missing_for": "packages",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    """Import the module of a public name on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
