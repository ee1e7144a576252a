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
WALL_HU = -300.0          # soft tissue (chest wall, pleura, mediastinum) reads above this
WALL_MIN_SHARE = 0.05     # a chest-wall band: an edge-touching soft-tissue component >= 5 % of the patch


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


def chest_wall_mask(images: np.ndarray) -> np.ndarray:
    """(n, H, W) HU patches -> (n, H, W) bool: the chest wall / pleura / mediastinum in each patch,
    i.e. soft-tissue (> :data:`WALL_HU`) components (after a one-pixel closing) that touch the
    patch's edge along >= 8 pixels and cover >= :data:`WALL_MIN_SHARE` of it (vessels crossing the
    edge are thinner and smaller). On a case the model sees everything outside the lung mask as
    +200 HU; training sets these pixels to the same value, so "touches the chest wall" is not a
    feature of any class (176 of CIP's 184 paraseptal patches hold such a band, 49 of 370 normal)."""
    from scipy import ndimage

    images = np.asarray(images)
    out = np.zeros(images.shape, bool)
    edge = np.zeros(images.shape[1:], bool)
    edge[0] = edge[-1] = True
    edge[:, 0] = edge[:, -1] = True
    for i, image in enumerate(images):
        soft = image > WALL_HU
        soft |= ndimage.binary_closing(soft, iterations=1)
        components, n = ndimage.label(soft)
        for c in range(1, n + 1):
            member = components == c
            if (member & edge).sum() >= 8 and member.mean() >= WALL_MIN_SHARE:
                out[i] |= member
    return out


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """(n,) int: the index of the first patch with identical pixels (a patch's own index when
    it is unique). CIP's file holds 5 exact duplicates."""
    flat = np.asarray(images).reshape(len(images), -1)
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def patch_folds(labels: np.ndarray, k: int = 5, seed: int = 0, images: np.ndarray | None = None) -> list:
    """``k`` stratified folds as (train indices, test indices) pairs (scikit-learn's
    StratifiedKFold, shuffled with ``seed``); with ``images`` every exact duplicate goes to the
    fold of its first copy (so no test patch has a copy in training). The patches carry no
    subject ids, so a fold's test patches may come from subjects (even lungs) seen in training:
    the figures are optimistic for new subjects and scanners."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.zeros(len(labels), int)
    for f, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[test] = f
    if images is not None:
        fold = fold[duplicate_groups(images)]
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]
