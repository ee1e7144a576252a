"""Lung segmentation: ``segment_lungs(ct, engine=...) -> Segmentation``.

Engines: ``lungmask`` (JoHof/lungmask U-Net, when its weights are on this machine),
``classical`` (threshold, airways, right / left split, filling; no weights), ``auto`` (lungmask
when it is installed and its weights are found, else classical, recording why), or a mask the user gives
(:func:`load_mask`), which replaces the engine. Labels: 0 background, 1 right lung, 2 left lung
(``docs/contracts.md``); lobes with lungmask's LTRCLobes codes when asked for.

Every engine's airways come from the one airway finder (:mod:`.airways`): the classical engine
keeps them out of its lungs, lungmask's labels lose the trachea and main bronchi they hold
(:func:`engine_airways`), and a user's mask is left as given, the airways found beside it for
display (:func:`case_airways`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, plain_numbers
from ..options import ENGINES
from ..packages import PIP_REQUIREMENTS, missing_package
from ..volume import CTVolume


@dataclass
class Segmentation:
    """Lung labels on the CT grid and how they were made."""

    labels: np.ndarray                 # uint8 (z, y, x): 0 background, 1 right, 2 left
    engine_used: str                   # lungmask, classical or file
    lobes: np.ndarray | None = None    # uint8 LTRCLobes codes (1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL)
    fallback_reason: str | None = None
    warnings: list = field(default_factory=list)
    weights: dict = field(default_factory=dict)
    #: bool (z, y, x): trachea, main (and lobar) bronchi lumen from the one airway finder, for
    #: display; kept out of the lungs by the engines (a user's mask is not altered: it may overlap)
    airways: np.ndarray | None = None

    def as_dict(self) -> dict:
        """JSON-ready summary (no arrays)."""
        return {"engine_used": self.engine_used, "fallback_reason": self.fallback_reason,
                "warnings": list(self.warnings), "weights": self.weights,
                "right_voxels": int((self.labels == 1).sum()), "left_voxels": int((self.labels == 2).sum()),
                "airway_voxels": None if self.airways is None else int(self.airways.sum())}


def segment_lungs(ct: CTVolume, engine: str = "auto", lungmask_weights=None, fill_weights=None,
                  lobes: bool = False, download: bool = False, progress=None) -> Segmentation:
    """Segment the lungs of ``ct``.

    Args:
        engine: ``auto``, ``lungmask`` or ``classical``.
        lungmask_weights / fill_weights: weights files (else environment variables, else the
            torch hub cache lungmask downloads into).
        lobes: also produce a lobe map (lungmask's LTRCLobes + R231 fusion; the classical
            engine has no lobes and says so).
        download: let lungmask's published weights be fetched into the torch hub cache when
            missing (needs internet; off by default so that nothing downloads unasked).
        progress: ``progress(fraction, message)``: lungmask reports after each batch of slices
            (the classical engine takes seconds and reports nothing).
    Raises:
        InputError: ``engine="lungmask"`` and its weights are missing (names the expected file).
        MissingPackage: ``engine="lungmask"`` and lungmask (or torch) is not installed; ``auto``
            then uses the classical engine and says why (``fallback_reason``, first warning).
    """
    from .classical import segment_classical
    from .lungmask_engine import WeightsMissing, run_lungmask

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    fallback = None
    if engine in ("auto", "lungmask"):
        try:
            result = run_lungmask(ct, lungmask_weights, fill_weights, lobes=lobes, download=download,
                                  progress=progress)
            labels, lobe_map, airways = engine_airways(ct, result.labels, result.lobes)
            return Segmentation(labels, "lungmask", lobe_map, None, result.warnings, result.weights,
                                airways=airways)
        except WeightsMissing as missing:
            if engine == "lungmask":
                raise
            fallback = f"lungmask weights missing, classical engine used: {missing}"  # first warning
        except ImportError as error:  # lungmask (or torch, or one of lungmask's own packages) not installed
            package = (error.name or "lungmask").split(".")[0]
            if engine == "lungmask":
                raise missing_package(package, "engine lungmask", "choose engine classical (or auto)") from None
            fallback = (f"lungmask engine skipped, classical engine used: the Python package {package} is not "
                        f"installed ({PIP_REQUIREMENTS.get(package, package)} enables it)")
    result = segment_classical(ct.hu, ct.spacing, ct.direction, ct.padding_hu)
    warnings = list(result.warnings)
    if fallback:
        warnings.insert(0, fallback)
    if lobes:
        warnings.append("lobes need the lungmask engine (LTRCLobes weights): no lobe map")
    return Segmentation(result.labels, "classical", None, fallback, warnings, airways=result.airways)


def case_airways(ct: CTVolume, within=None):
    """The airway finder's result (:class:`.airways.Airways`) on ``ct``'s (z, y, x) grid: the
    trachea and the main bronchi traced slice by slice, and the lobar bronchi grown inside
    ``within`` (bool (z, y, x): an engine's lungs) when given."""
    from ..analysis.anatomy import padding_mask
    from .airways import find_airways

    return find_airways(ct.hu, ct.spacing, ct.direction, padding=padding_mask(ct.hu, ct.padding_hu), within=within)


def engine_airways(ct: CTVolume, labels: np.ndarray, lobes: np.ndarray | None = None) -> tuple:
    """(labels, lobes, airways) of an engine whose lung ``labels`` (uint8 (z, y, x)) may hold
    the trachea or main bronchi (lungmask's U-Net sees one slice at a time): the airway lumen,
    its partial-volume rim and wall are set to 0 in both maps
    (:func:`.airways.exclude_airways`); ``airways`` is the lumen (bool), None when none is found.
    The lobar bronchi are grown inside the labels (they hold them when they hold the trachea)."""
    from .airways import exclude_airways

    lumen = case_airways(ct, within=labels > 0).lumen
    if not lumen.any():
        return labels, lobes, None
    if (lumen & (labels > 0)).any():
        labels = exclude_airways(labels, lumen, ct.spacing)
        if lobes is not None:
            lobes = np.where(labels > 0, lobes, 0).astype(lobes.dtype)
    return labels, lobes, lumen


def load_mask(path, ct: CTVolume, name: str = "lung mask") -> np.ndarray:
    """Read a label map the user gives and check it lies on the CT grid (same shape, spacing,
    origin, direction within 0.01 mm / 1e-4). Returns the (z, y, x) uint8 array."""
    from ..io.read import read_ct

    mask = read_ct(Path(path), reorient=False)  # compared with the CT's grid as the user has it
    grid = ct.input_geometry_dict()
    if mask.shape != tuple(grid["shape"]):
        raise InputError(f"{path}: {name} is {plain_numbers(mask.shape[::-1], 0)} voxels but the CT is "
                         f"{plain_numbers(grid['shape'][::-1], 0)}: give a mask on the CT grid")
    for what, a, b, tol in (("spacing", mask.spacing, grid["spacing"], 0.01),
                            ("origin", mask.origin, grid["origin"], 0.01),
                            ("direction", mask.direction, grid["direction"], 1e-4)):
        if not np.allclose(a, b, atol=tol):
            raise InputError(f"{path}: {name} {what} {plain_numbers(a)} differs from the CT's "
                             f"{plain_numbers(b)}: resample the mask onto the CT grid")
    values = mask.hu
    if values.min() < 0 or values.max() > 65535:
        raise InputError(f"{path}: {name} holds values outside 0..65535; give a label map")
    values = values.astype(np.uint16 if values.max() > 255 else np.uint8)
    # onto the CT's canonical grid, exactly as the CT was moved (nearest neighbour if resampled)
    return ct.from_input_grid(values)


def check_lung_labels(labels: np.ndarray, source, hint: str = "") -> None:
    """Refuse a label map that is not a lung mask (values other than 0, 1 right, 2 left) or
    that holds no lung voxel at all: ``analyze --lung-mask`` and ``qct --lung-mask`` share this
    one rule (an empty mask would give a table of empty values, never a measurement)."""
    labels = np.asarray(labels)
    if labels.size and labels.max() > 2:
        raise InputError(f"{source}: holds labels up to {labels.max()}; a lung mask has 0 background, "
                         f"1 right lung, 2 left lung{hint}")
    if not labels.size or not labels.any():
        raise InputError(f"{source}: the lung mask holds no lung voxel (every value is 0); give a mask with "
                         "1 right lung and 2 left lung on the CT grid (e.g. from 'emphysema-xai segment')")


def user_lung_labels(lung_mask, ct: CTVolume, name: str = "the lung mask") -> np.ndarray:
    """The user's lung labels on the CT's canonical grid, checked (:func:`check_lung_labels`).

    Args:
        lung_mask: a label-map file on the CT grid (:func:`load_mask`), or a (z, y, x) array on
            the grid of the CT as given (e.g. from a Slicer segmentation node); 1 right, 2 left.
    Returns:
        (z, y, x) uint8 labels on ``ct``'s grid.
    """
    if isinstance(lung_mask, np.ndarray):
        shape = tuple(ct.input_geometry_dict()["shape"])
        if lung_mask.shape != shape:
            raise InputError(f"{name} is {lung_mask.shape} voxels but the CT is {shape}: give a mask on the CT grid")
        labels = ct.from_input_grid(lung_mask)
        check_lung_labels(labels, name)
    else:
        labels = load_mask(lung_mask, ct)
        check_lung_labels(labels, lung_mask)
    return labels.astype(np.uint8)


def case_lung_labels(ct: CTVolume, lung_mask=None, engine: str = "auto") -> np.ndarray:
    """A case's lung labels: the user's mask when given (checked), else the ``engine``'s."""
    if lung_mask is not None and not (isinstance(lung_mask, str) and not lung_mask):
        return user_lung_labels(lung_mask, ct)
    return segment_lungs(ct, engine=engine).labels


__all__ = ["ENGINES", "Segmentation", "case_airways", "case_lung_labels", "check_lung_labels", "engine_airways",
           "load_mask", "segment_lungs",
           "user_lung_labels"]
