"""What a viewer shows of one analysed case, from the run in memory or from its output folder.

:class:`CaseLayers` holds the case's voxel layers on the grid of the CT as the user gave it
((z, y, x) numpy arrays: the grid ``summary.json``'s ``input`` describes, which every NRRD of the
folder shares) and its ``summary.json`` object, from which every table is made. The Slicer scene
(``mrml.scene_export.add_case_nodes``) is built from it alike for a run just finished in this
process (:func:`layers_from_result`), for the Slicer module's analysis run in a child process and
for a researcher's "Load results" of a server run (:func:`layers_from_folder`).
File names: ``docs/contracts.md``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis.patterns import PATTERN_FILE
from ..errors import InputError

#: the airway mask beside the lung labels (uint8 0 / 1 on the CT grid)
AIRWAYS_FILE = "airways.nrrd"


@dataclass
class CaseLayers:
    """One case's layers ((z, y, x) on the input CT grid) and its ``summary.json`` object.

    labels: uint8 lung labels (1 right, 2 left), None for a case excluded by QC.
    airways: bool airway mask (trachea, main and lobar bronchi) or None.
    laa_map: uint8 LAA cluster classes (0 none, 1-4 by cluster size) or None.
    pattern_map: uint8 pattern labels (``docs/contracts.md``) or None without a pattern model.
    attributions: method -> float32 attribution volume (unitless, >= 0 is evidence for the target).
    """

    summary: dict
    labels: np.ndarray | None = None
    airways: np.ndarray | None = None
    laa_map: np.ndarray | None = None
    pattern_map: np.ndarray | None = None
    attributions: dict = field(default_factory=dict)

    @property
    def analysed(self) -> bool:
        """False for a case quality control excluded (it has no lungs or densitometry)."""
        return self.summary.get("qct") is not None and self.labels is not None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) of the input CT grid."""
        return tuple(int(n) for n in self.summary["input"]["shape"])


def layers_from_result(result) -> CaseLayers:
    """The layers of a :class:`~EmphysemaXAILib.pipeline.CaseResult`, mapped onto the input grid."""
    summary = json.loads(json.dumps(result.summary()))  # the same plain object the folder holds
    if result.qct is None:
        return CaseLayers(summary)
    on_grid = result.ct.on_input_grid
    airways = result.segmentation.airways
    pattern = result.severity.pattern_labels if result.severity is not None else None
    return CaseLayers(summary, labels=on_grid(result.segmentation.labels),
                      airways=None if airways is None else on_grid(airways.view(np.uint8)) > 0,
                      laa_map=on_grid(result.qct.laa_map),
                      pattern_map=None if pattern is None else on_grid(pattern.astype(np.uint8)),
                      attributions={m: on_grid(e.volume) for m, e in result.explanations.items()})


def layers_from_folder(folder) -> CaseLayers:
    """The layers of an ``analyze`` output folder (or one case folder of a ``batch`` run).

    Raises:
        InputError: not such a folder (no ``summary.json``), a file missing that the summary
            promises, or a layer whose shape is not the summary's input grid.
    """
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{folder}: no summary.json; choose the output folder of an analysis (analyze --out, "
                         "or a case folder of a batch run)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        shape = tuple(int(n) for n in summary["input"]["shape"])
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{summary_path}: not an EmphysemaXAI summary ({error})") from None
    layers = CaseLayers(summary)
    if summary.get("qct") is None:
        return layers
    layers.labels = _read(folder / "lung_labels.nrrd", shape, np.uint8, required=True)
    layers.laa_map = _read(folder / "laa_map.nrrd", shape, np.uint8, required=True)
    airways = _read(folder / AIRWAYS_FILE, shape, np.uint8)
    layers.airways = None if airways is None else airways > 0
    layers.pattern_map = _read(folder / PATTERN_FILE, shape, np.uint8, required=summary.get("severity") is not None
                               and summary["severity"].get("patterns") is not None)
    for method, entry in (summary.get("explanations") or {}).items():
        layers.attributions[method] = _read(folder / entry.get("file", f"attribution_{method}.nrrd"), shape,
                                            np.float32, required=True)
    return layers


def _read(path: Path, shape: tuple, dtype, required: bool = False) -> np.ndarray | None:
    """A (z, y, x) array from a NRRD of the folder; None when absent and not required."""
    if not path.is_file():
        if required:
            raise InputError(f"{path}: missing (the folder's summary.json lists it); copy the whole output folder")
        return None
    import SimpleITK as sitk

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as error:
        raise InputError(f"{path}: cannot read ({str(error).strip().splitlines()[-1]})") from None
    if array.shape != shape:
        raise InputError(f"{path}: grid {array.shape} is not the analysed CT's {shape}; the folder is inconsistent")
    return array.astype(dtype, copy=False)
