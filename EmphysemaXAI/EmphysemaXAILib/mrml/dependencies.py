"""What the Slicer module needs beyond what Slicer ships, and installing it inside Slicer.

The list lives in one file, the module's ``Resources/requirements.txt`` (pip requirement lines;
the ranges match pyproject.toml and :data:`EmphysemaXAILib.packages.PIP_REQUIREMENTS`). Which
of them a run needs: :func:`EmphysemaXAILib.packages.missing_for`.

Installing (:func:`install_for`): torch first, from Slicer's PyTorch extension
(``PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=..., torchVersionRequirement=...)``:
it picks the CUDA build for this computer's GPU); then the others with ``slicer.util.pip_install``
and a constraints file that pins every package Slicer ships (numpy, scipy, pydicom, SimpleITK,
pillow, requests, packaging, ...) and torch at the versions installed here, so pip installs
beside them or fails, and never replaces them. A package Slicer ships is never installed.
The pure parts (plan, pip arguments, constraints text, messages) are plain functions, tested
headless; only :func:`install_for` and :func:`download_lungmask_weights` call Slicer.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

#: Distributions a Slicer 5.10 application ships (docs: shared/docs/slicer-python.md): pinned
#: in the constraints file at their installed versions, never installed or upgraded here.
SLICER_SHIPPED = ("numpy", "scipy", "pydicom", "SimpleITK", "pillow", "requests", "urllib3", "certifi", "idna",
                  "charset-normalizer", "dicomweb-client", "packaging", "pip", "setuptools", "wheel", "GitPython",
                  "PyGithub", "cryptography", "chardet", "six", "typing_extensions", "wrapt", "python-dateutil",
                  "vtk", "slicer-core")
#: Installed by the PyTorch extension (its build for the GPU), then pinned for pip
TORCH_PACKAGES = ("torch", "torchvision")
#: what needs torch to be installed first
NEEDS_TORCH = ("lungmask", "monai", "captum")


def normalise(name: str) -> str:
    """PEP 503 name: ``Python_DateUtil`` -> ``python-dateutil``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    """``monai>=1.5.1`` -> ``monai``."""
    return re.split(r"[<>=!~;\[ ]", line.strip())[0].lower()


def read_requirements(path) -> list[tuple[str, str]]:
    """(import name, pip requirement) for each requirement line of ``path`` (comments skipped)."""
    with open(path, encoding="utf-8") as handle:
        lines = [line.split("#")[0].strip() for line in handle]
    return [(requirement_name(line), line) for line in lines if line]


def missing_packages(path) -> list[str]:
    """Import names of the requirements of ``path`` that do not import in this Python."""
    from ..packages import is_installed

    return [name for name, _ in read_requirements(path) if not is_installed(name)]


def requirement_specifier(line: str) -> str:
    """The version part of a requirement: ``torch>=2.4.1,<=2.14.1`` -> ``>=2.4.1,<=2.14.1``."""
    return line.strip()[len(requirement_name(line)):].split(";")[0].strip()


def torch_requirement(path) -> str:
    """The ``torchVersionRequirement`` for the PyTorch extension: the torch line's range."""
    return next((requirement_specifier(line) for name, line in read_requirements(path) if name == "torch"), "")


def satisfies(version: str, specifier: str) -> bool:
    """True when ``version`` (e.g. ``2.5.1+cu121``) lies in ``specifier`` (``>=2.4.1,<=2.14.1``)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return SpecifierSet(specifier).contains(Version(version).public, prereleases=True)
    except InvalidVersion:
        return False


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pinned_versions(names=SLICER_SHIPPED + TORCH_PACKAGES, version=None) -> dict:
    """name -> installed version of each of ``names`` that is installed here (what pip must keep;
    ``version(name)``: default :func:`installed_version`)."""
    version = version or installed_version
    found = {name: version(name) for name in names}
    return {name: value for name, value in found.items() if value}


def constraints_text(versions: dict) -> str:
    """A pip constraints file pinning each package at its version (``numpy==2.0.2``)."""
    lines = ["# written by EmphysemaXAI: the packages Slicer ships (and its torch) stay as they are"]
    return "\n".join(lines + [f"{name}=={value}" for name, value in versions.items()]) + "\n"


def pip_arguments(requirements, constraints_file) -> list[str]:
    """``slicer.util.pip_install``'s argument list (a list: each item is quoted, so a path with
    spaces is safe): the requirements under the constraints file."""
    return ["-c", str(constraints_file), *requirements]


@dataclass
class InstallPlan:
    """What :func:`install_for` will do."""

    torch: str | None = None           # torch requirement for the PyTorch extension (None: torch is fine)
    torch_upgrade: bool = False        # an installed torch is outside the range
    pip: list = field(default_factory=list)       # requirement lines for pip
    refused: list = field(default_factory=list)   # names Slicer ships: never installed
    lungmask_weights: bool = False     # lungmask is installed and its R231 weights are not here: fetch them too


def install_plan(path, names, version=None, weights_here=None) -> InstallPlan:
    """The plan for installing the requirements of ``path`` named in ``names`` (import names, as
    :func:`missing_packages` or :func:`~EmphysemaXAILib.packages.missing_for` give them;
    ``version(name)``: the installed version or None, default :func:`installed_version`).
    lungmask comes with its weights or not at all: when it is planned and ``weights_here()``
    (default: :func:`~EmphysemaXAILib.segmentation.lungmask_engine.weights_found`) is False, the
    plan downloads them too, in the same confirmation."""
    version = version or installed_version
    if weights_here is None:
        from ..segmentation.lungmask_engine import weights_found as weights_here
    wanted = {normalise(n) for n in names}
    shipped = {normalise(n) for n in SLICER_SHIPPED}
    plan = InstallPlan()
    lines = dict(read_requirements(path))
    for name in wanted:
        if name in shipped:
            plan.refused.append(name)
    torch_line = lines.get("torch", "torch")
    current = version("torch")
    if "torch" in wanted or (current is None and wanted & set(NEEDS_TORCH)):
        plan.torch = requirement_specifier(torch_line)
    if current is not None and not satisfies(current, requirement_specifier(torch_line)):
        plan.torch, plan.torch_upgrade = requirement_specifier(torch_line), True
    plan.pip = [line for name, line in lines.items()
                if normalise(name) in wanted and normalise(name) not in shipped and name not in TORCH_PACKAGES]
    for name in sorted(wanted - shipped - {normalise(n) for n in lines} - set(TORCH_PACKAGES)):
        plan.pip.append(name)   # not in the file (e.g. an older file): unversioned
    plan.lungmask_weights = "lungmask" in wanted and not weights_here()
    return plan


def confirmation_text(plan: InstallPlan) -> str:
    """The question asked before installing (one paragraph)."""
    parts = []
    if plan.torch is not None:
        parts.append(f"PyTorch (torch{plan.torch}) through the PyTorch extension"
                     + (", replacing the installed torch" if plan.torch_upgrade else ""))
    if plan.pip:
        parts.append(", ".join(plan.pip))
    if plan.lungmask_weights:
        parts.append("lungmask's R231 weights (the published file, from github.com/JoHof/lungmask, into the "
                     "torch hub cache)")
    return ("EmphysemaXAI will download and install " + "; ".join(parts) + ". This needs internet and may take "
            "several minutes; Slicer's own packages (numpy, SimpleITK, pydicom ...) are kept as they are.")


def install_message(installed: dict, failed: dict, needs=(), restart: bool = False, refused=()) -> str:
    """One message saying what happened: what was installed (name -> version), what could not
    be (name -> why) and what runs without it (from ``needs``, :class:`~EmphysemaXAILib.packages.Need`)."""
    lines = []
    if installed:
        lines.append("Installed " + ", ".join(f"{name} {version}".strip() for name, version in installed.items())
                     + ".")
    without = {need.package: need.without for need in needs}
    for name, reason in failed.items():
        lines.append(f"Could not install {name}: {reason}."
                     + (f" Without it: {without[name]}." if name in without else ""))
    for name in refused:
        lines.append(f"Not installed: {name} comes with Slicer and is kept as it is.")
    if restart:
        lines.append("Restart Slicer to use the new torch (the old one is loaded).")
    if not lines:
        lines.append("Nothing to install: every package is here.")
    return " ".join(lines)


@dataclass
class InstallResult:
    installed: dict = field(default_factory=dict)    # name -> version
    failed: dict = field(default_factory=dict)       # name -> why
    cancelled: bool = False
    restart: bool = False
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled


def _install_torch(plan: InstallPlan, result: InstallResult) -> None:
    """torch through the PyTorch extension (Slicer calls)."""
    try:
        import PyTorchUtils
    except ImportError:
        result.failed["torch"] = ("the PyTorch extension is not installed (install 'PyTorch' from the Extensions "
                                  "Manager, restart Slicer, then retry)")
        return
    loaded = "torch" in sys.modules
    try:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                              torchVersionRequirement=plan.torch)
    except Exception as error:   # pip / light-the-torch failed: its output is in the Python console
        result.failed["torch"] = f"the PyTorch extension's installer failed ({type(error).__name__}: {error})"
        return
    if torch is None:
        result.failed["torch"] = "installation cancelled"
        return
    result.installed["torch"] = installed_version("torch") or ""
    result.restart = loaded and plan.torch_upgrade


def _pip(requirements, constraints: Path, result: InstallResult) -> None:
    """pip install ``requirements`` under ``constraints``; when the batch fails, one by one, so
    one impossible package does not keep the others out (Slicer calls)."""
    import slicer

    try:
        slicer.util.pip_install(pip_arguments(requirements, constraints))
        batches = []
    except Exception:   # CalledProcessError (pip's exit code; its output is in the Python console)
        batches = [[line] for line in requirements]
    for batch in batches:
        try:
            slicer.util.pip_install(pip_arguments(batch, constraints))
        except Exception as error:
            code = getattr(error, "returncode", None)
            why = f"exit code {code}; pip's output is in the Python console" if code is not None else str(error)
            name = requirement_name(batch[0])
            result.failed[name] = f"pip could not install {batch[0]} beside Slicer's packages ({why})"
    importlib.invalidate_caches()
    for line in requirements:
        name = requirement_name(line)
        if name not in result.failed:
            result.installed[name] = installed_version(name) or ""


def install_for(path, names, *, ask_confirmation: bool = True, needs=()) -> InstallResult:
    """Install inside Slicer the requirements of ``path`` named in ``names``: confirmation
    (``slicer.util.confirmOkCancelDisplay``), torch through the PyTorch extension, the others with
    ``slicer.util.pip_install`` under the constraints file. ``needs`` (the
    :class:`~EmphysemaXAILib.packages.Need` list of :func:`~EmphysemaXAILib.packages.missing_for`)
    only words the message (what runs without a package that failed). Never raises for a
    package that fails: ``result.failed`` and ``result.message`` say what happened."""
    import slicer

    plan = install_plan(path, names)
    result = InstallResult()
    if plan.torch is None and not plan.pip:
        result.message = install_message({}, {}, needs, refused=plan.refused)
        return result
    if ask_confirmation and not slicer.util.confirmOkCancelDisplay(confirmation_text(plan),
                                                                   windowTitle="EmphysemaXAI: install packages"):
        result.cancelled = True
        result.message = declined_message(needs)
        return result
    if plan.torch is not None:
        _install_torch(plan, result)
    requirements = list(plan.pip)
    if "torch" in result.failed:
        for line in [r for r in requirements if requirement_name(r) in NEEDS_TORCH]:
            result.failed[requirement_name(line)] = "it needs torch, which could not be installed"
            requirements.remove(line)
    if requirements:
        folder = Path(tempfile.mkdtemp(prefix="EmphysemaXAI-pip-"))
        constraints = folder / "constraints.txt"
        constraints.write_text(constraints_text(pinned_versions()), encoding="utf-8")
        _pip(requirements, constraints, result)
    if plan.lungmask_weights and "lungmask" in result.installed:
        try:
            download_lungmask_weights()
            result.installed["lungmask R231 weights"] = ""
        except Exception as error:   # no internet, a failed download: lungmask is there, its weights not
            result.failed["lungmask R231 weights"] = str(error)
    result.message = install_message(result.installed, result.failed, needs, result.restart, plan.refused)
    return result


def declined_message(needs=()) -> str:
    """What a declined installation means for the run: one sentence per missing package (from
    ``needs``, :class:`~EmphysemaXAILib.packages.Need`): what runs without it, or that it is
    needed by an explicit choice."""
    lines = ["Installation cancelled: nothing was installed."]
    for need in needs:
        lines.append(f"Without {need.package}: {need.without}.")
    return " ".join(lines)


def install_packages(path, names) -> InstallResult:
    """:func:`install_for` without asking (the caller asked); raises RuntimeError with the
    message when a package could not be installed."""
    result = install_for(path, names, ask_confirmation=False)
    if not result.ok:
        raise RuntimeError(result.message)
    return result


def download_lungmask_weights(lobes: bool = False) -> tuple[dict, list]:
    """Fetch lungmask's R231 weights (and LTRCLobes with ``lobes``) into the torch hub cache
    through lungmask's own loading path, where the lungmask engine finds them; a file already
    there is kept. Returns ({model: path}, warnings). Needs internet when a file is missing.

    Raises:
        MissingPackage: lungmask (or torch) is not installed.
        WeightsMissing: a download failed (the message says where to put the file by hand).
    """
    from ..packages import missing_package
    from ..segmentation.lungmask_engine import fetch_weights

    paths, warnings = {}, []
    for model in ("R231", "LTRCLobes") if lobes else ("R231",):
        try:
            paths[model], notes = fetch_weights(model)
        except ImportError as error:
            raise missing_package((error.name or "lungmask").split(".")[0], "downloading lungmask's weights") from None
        warnings.extend(notes)
    return paths, warnings


__all__ = ["InstallPlan", "InstallResult", "SLICER_SHIPPED", "confirmation_text", "constraints_text",
           "declined_message", "download_lungmask_weights", "install_for", "install_message", "install_packages",
           "install_plan",
           "missing_packages", "pinned_versions", "pip_arguments", "read_requirements", "satisfies",
           "torch_requirement"]
