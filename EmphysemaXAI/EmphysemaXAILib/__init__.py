"""EmphysemaXAI core library: explainable emphysema assessment on chest CT, headless.

The core modules (everything outside :mod:`.mrml`) import no ``slicer`` / ``vtk`` / ``qt``.
Research and teaching use only: not a medical device.
"""
__version__ = "0.1.0"

from .io.read import read_ct  # noqa: E402,F401
from .errors import ExcludedError, InputError  # noqa: E402,F401
from .analysis.qc import QCReport, run_qc  # noqa: E402,F401
from .volume import CTVolume  # noqa: E402,F401
