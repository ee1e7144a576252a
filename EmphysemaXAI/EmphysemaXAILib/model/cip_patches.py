"""The Chest Imaging Platform's expert-labelled emphysema patches (``EmphysemaPatches.mat``).

1,337 real 31 x 31 HU patches of inspiratory COPDGene-type CT, labelled by experts: NT normal
(370), PS paraseptal (184), PL panlobular (148), CL1 / CL2 / CL3 centrilobular mild / moderate /
severe (170 / 287 / 178). The file stores no subject ids and no pixel spacing (COPDGene's
in-plane pixels are 0.6-0.75 mm: :data:`CIP_PIXEL_MM` is the assumed middle). The data is not part
of this project (licence and provenance: ``../shared/data/README.md``); it is read from where the
user keeps it.

CIP's classes map onto the project's six pattern classes (:data:`CIP_LABELS`; the classes and
their broad groups live in ``analysis/patterns.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analysis.patterns import PATTERNS
from ..errors import InputError

#: CIP's class label -> index into PATTERNS
CIP_LABELS = {"NT": 0, "CL1": 1, "CL2": 2, "CL3": 3, "PS": 4, "PL": 5}
CIP_PIXEL_MM = 0.65
PATCH_SIZE = 31


@dataclass
class PatchSet:
    """``images`` (n, 31, 31) float32 HU (rows, columns as stored), ``labels`` (n,) int64 index
    into :data:`PATTERNS`, ``pixel_mm`` the assumed pixel size."""

    images: np.ndarray
    labels: np.ndarray
    pixel_mm: float = CIP_PIXEL_MM

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(PATTERNS)}


def load_cip_patches(path) -> PatchSet:
    """Read ``EmphysemaPatches.mat`` (``EmphyPatch``: 1 x 6 cells of 31 x 31 x N int16 HU,
    ``classLabel``: 1 x 6 names) into a :class:`PatchSet`, classes in the file's order."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist: give the path of CIP's EmphysemaPatches.mat")
    try:
        mat = scipy.io.loadmat(str(path))
        cells, names = mat["EmphyPatch"][0], [str(np.asarray(n).ravel()[0]) for n in mat["classLabel"][0]]
    except (ValueError, KeyError, IndexError, TypeError, OSError) as exc:
        raise InputError(f"{path} is not CIP's EmphysemaPatches.mat ({exc}): expected the cells "
                         "EmphyPatch and classLabel") from exc
    images, labels = [], []
    for cell, name in zip(cells, names):
        if name not in CIP_LABELS:
            raise InputError(f"{path}: unknown class label {name!r}; expected {', '.join(CIP_LABELS)}")
        stack = np.asarray(cell)
        if stack.ndim != 3 or stack.shape[:2] != (PATCH_SIZE, PATCH_SIZE):
            raise InputError(f"{path}: class {name} holds an array of shape {stack.shape}, expected 31 x 31 x N")
        images.append(np.moveaxis(stack, 2, 0).astype(np.float32))
        labels.append(np.full(stack.shape[2], CIP_LABELS[name], np.int64))
    return PatchSet(np.concatenate(images), np.concatenate(labels))


def patch_folds(labels: np.ndarray, k: int = 5, seed: int = 0) -> list:
    """``k`` stratified folds as (train indices, test indices) pairs (scikit-learn's
    StratifiedKFold, shuffled with ``seed``). The patches carry no subject ids, so a fold's test
    patches may come from subjects (even lungs) seen in training: the figures are optimistic
    for new subjects and scanners."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(labels)), labels)]
