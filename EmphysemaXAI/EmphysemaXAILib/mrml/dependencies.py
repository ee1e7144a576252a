"""What the Slicer module needs beyond what Slicer ships, and installing it inside Slicer.

The list lives in one file, the module's ``Resources/requirements.txt`` (pip requirement lines;
the ranges match pyproject.toml). torch comes first, from Slicer's PyTorch extension (it picks
the CUDA build for the GPU); the others are then pip-installed with that torch version pinned.
Slicer's numpy and SimpleITK are never replaced, and slicer-core is never installed into Slicer.
"""
from __future__ import annotations

import importlib.util
import re


def read_requirements(path) -> list[tuple[str, str]]:
    """(import name, pip requirement) for each requirement line of ``path`` (comments skipped)."""
    with open(path, encoding="utf-8") as handle:
        lines = [line.split("#")[0].strip() for line in handle]
    return [(re.split(r"[<>=!~;\[ ]", line)[0].lower(), line) for line in lines if line]


def missing_packages(path) -> list[str]:
    """Import names of the requirements of ``path`` that do not import in this Python."""
    return [name for name, _ in read_requirements(path) if importlib.util.find_spec(name) is None]


def install_packages(path, names) -> None:
    """Install the requirements of ``path`` named in ``names`` inside Slicer: torch through the
    PyTorch extension, the others with ``slicer.util.pip_install`` next to that torch."""
    import slicer

    if "torch" in names:
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("install the PyTorch extension (Extensions Manager), then retry") from None
        PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
    wanted = [req for name, req in read_requirements(path) if name in names and name != "torch"]
    if wanted:
        import torch

        # keep the torch build the PyTorch extension chose (monai would otherwise pull another)
        slicer.util.pip_install(" ".join(wanted + [f"torch=={torch.__version__}"]))
