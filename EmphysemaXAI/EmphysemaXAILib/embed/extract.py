"""The embedding table (``docs/contracts.md``, ``embed``): one row per case, ``id`` + QCT markers +
features, written as CSV or Parquet.

Cases route (:func:`embed_cases`): read CT -> lung labels (engine or given mask) -> three zone
patches (:mod:`.zones`) -> one forward pass of the backbone -> columns ``<zone>_<i:04d>``
(``upper_0000`` ... ``lower_<dim-1>``: each zone's embedding, concatenated upper, middle, lower).

Images route (:func:`embed_images`): each 2D HU image (:mod:`..io.images`) is windowed like a zone
patch and repeated into the 3 channels (the 2.5D channels of a single slice), embedded whole
(no crop, no mask) -> columns ``f_<i:04d>``.

QCT marker columns use the project's densitometry conventions (``qct.py``: %LAA counts
HU <= -950, perc15 is the smallest HU with CDF >= 15 %): ``qct_laa950_pct`` (%),
``qct_perc15_hu`` (HU) and, for cases, ``qct_volume_l`` (litres) of the whole lung (both lungs);
for images they are of every pixel of the image (no lung mask: an image that shows more than
lung reads denser than its lung).

``id`` comes from the file or folder name (cases) or the path relative to the folder (images),
never from patient tags.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..io.files import case_id
from .backbones import Backbone, load_backbone
from .zones import zone_patches

if TYPE_CHECKING:
    import pandas as pd

FEATURE_DTYPE = np.float32


def case_ids(paths) -> list:
    """Ids of several inputs: :func:`~EmphysemaXAILib.io.files.case_id` of each when they are all different, else each
    path relative to the inputs' common folder, image suffix dropped (``case0/ct``, ``case1/ct``)."""
    import os

    paths = [Path(p) for p in paths]
    ids = [case_id(p) for p in paths]
    if len(set(ids)) == len(ids):
        return ids
    absolute = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    ids = [(p.parent.relative_to(root) / case_id(p)).as_posix() for p in absolute]
    if len(set(ids)) < len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"two inputs give the id {dup!r}; rename one so that every case has its own id")
    return ids


def qct_markers(hu_values: np.ndarray, voxel_mm3: float | None = None) -> dict:
    """``qct_laa950_pct``, ``qct_perc15_hu`` (and ``qct_volume_l`` when ``voxel_mm3`` is given)
    of the HU values of a region (any shape), with the project's QCT conventions."""
    from ..analysis.qct import region_metrics

    metrics = region_metrics(hu_values, voxel_mm3 or 1.0)
    out = {"qct_laa950_pct": metrics.get("laa950_pct"), "qct_perc15_hu": metrics.get("perc15_hu")}
    if voxel_mm3 is not None:
        out["qct_volume_l"] = metrics["volume_l"]
    return {k: (np.nan if v is None else float(v)) for k, v in out.items()}


def feature_columns(prefixes, dim: int) -> list:
    """``<prefix>_<i:04d>`` for every prefix, i < dim."""
    return [f"{prefix}_{i:04d}" for prefix in prefixes for i in range(dim)]


def case_row(ct, labels: np.ndarray, backbone: Backbone, case: str = "case", preview=None) -> dict:
    """The table row of one case already read and segmented: ``id``, QCT markers, features.

    Args:
        ct: :class:`~EmphysemaXAILib.volume.CTVolume`.
        labels: (z, y, x) lung labels on the CT grid (0 background, 1 right, 2 left).
        backbone: from :func:`load_backbone`.
        preview: optional PNG path for the three zone patches (:func:`.zones.save_zone_preview`).
    """
    lung = labels > 0
    row = {"id": case, **qct_markers(ct.hu[lung], float(np.prod(ct.spacing)))}
    patches = zone_patches(ct, labels)
    if preview is not None:
        from .zones import save_zone_preview

        save_zone_preview(patches, preview, title=f"{case}: zone patches ({backbone.name} input)")
    embedding = backbone.embed_zones(patches).astype(FEATURE_DTYPE)
    row.update(zip(feature_columns(patches.zones, backbone.dim), embedding.ravel()))
    return row


def _as_backbone(backbone) -> Backbone:
    return load_backbone(backbone) if isinstance(backbone, str) else backbone


def _table(rows: list, backbone: Backbone):
    import pandas as pd

    table = pd.DataFrame(rows)
    ids = table["id"] if len(table) else pd.Series([], dtype=str)
    if ids.duplicated().any():
        raise InputError(f"two inputs give the id {ids[ids.duplicated()].iloc[0]!r}; rename one so that "
                         "every case has its own id")
    table.attrs["embedding"] = backbone.info()
    return table


def embed_cases(inputs, backbone="efficientnet-lite0", *, engine: str = "auto", lung_masks=None,
                progress: bool = True, preview_dir=None) -> pd.DataFrame:
    """One row per CT case: ``id``, ``qct_laa950_pct``, ``qct_perc15_hu``, ``qct_volume_l``,
    ``upper_0000`` ... ``lower_<dim-1>`` (float32). See the module docstring.

    Args:
        inputs: CT paths (DICOM folders or files, NRRD / NIfTI / MHA).
        backbone: a :class:`Backbone` or a backbone name.
        engine: segmentation engine (``segment_lungs``) for cases without a mask.
        lung_masks: optional masks, one per input (path or None), on each CT's grid.
        progress: a tqdm bar on stderr.
        preview_dir: optional folder for ``<id>.png`` previews (``/`` in ids as ``__``) of each case's zone patches.
    Returns:
        pandas DataFrame; ``attrs["embedding"]`` holds the backbone's provenance.
    """
    from ..io.read import read_ct
    from ..segmentation import case_lung_labels

    inputs = [Path(p) for p in inputs]
    missing = [p for p in inputs if not p.exists()]
    if missing:
        raise InputError(f"{missing[0]}: no such file or folder; check the path ({len(missing)} inputs missing)")
    ids = case_ids(inputs)
    masks = list(lung_masks) if lung_masks is not None else [None] * len(inputs)
    if len(masks) != len(inputs):
        raise InputError(f"{len(masks)} lung masks for {len(inputs)} inputs; give one per input (or none)")
    backbone = _as_backbone(backbone)
    rows = []
    iterator = zip(inputs, masks, ids)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(inputs), desc=f"embed ({backbone.name})", unit="case", file=sys.stderr)
    for path, mask, case in iterator:
        ct = read_ct(path)
        labels = case_lung_labels(ct, mask, engine)
        preview = Path(preview_dir) / f"{case.replace('/', '__')}.png" if preview_dir is not None else None
        rows.append(case_row(ct, labels, backbone, case, preview))
    return _table(rows, backbone)


def embed_images(folder_or_paths, backbone="efficientnet-lite0", batch_size: int = 16) -> pd.DataFrame:
    """One row per 2D HU image: ``id``, ``qct_laa950_pct``, ``qct_perc15_hu``, ``f_0000`` ...

    Args:
        folder_or_paths: a folder (every TIFF / DICOM under it; id = path relative to it,
            posix) or a list of image paths (id = the path as given, posix).
        backbone: a :class:`Backbone` or a backbone name.
        batch_size: images per forward pass.
    """
    from ..io.images import image_files, read_slice
    from .zones import window

    if isinstance(folder_or_paths, (str, Path)):
        folder = Path(folder_or_paths)
        paths = image_files(folder)
        ids = [p.relative_to(folder).as_posix() for p in paths]
    else:
        paths = [Path(p) for p in folder_or_paths]
        ids = [p.as_posix() for p in paths]
        if not paths:
            raise InputError("no images given")
    backbone = _as_backbone(backbone)
    columns = feature_columns(["f"], backbone.dim)
    rows = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        slices = [read_slice(p) for p in chunk]
        images = [np.repeat(window(hu)[None], 3, axis=0) for hu in slices]
        embedding = backbone.embed(images).astype(FEATURE_DTYPE)
        for case, hu, vector in zip(ids[start:start + batch_size], slices, embedding):
            rows.append({"id": case, **qct_markers(hu), **dict(zip(columns, vector))})
    return _table(rows, backbone)


def table_suffix(path) -> str:
    """``.csv`` or ``.parquet`` (the table formats); anything else is an InputError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"{path}: unknown table type '{path.suffix}'; use .csv or .parquet")
    return suffix


def write_embeddings(table, path) -> Path:
    """Write the table atomically as CSV or Parquet (by the suffix of ``path``)."""
    from ..io.atomic import write_atomic

    path = Path(path)
    if table_suffix(path) == ".csv":
        write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))
    else:
        write_atomic(path, lambda tmp: table.to_parquet(tmp, index=False))
    return path


def read_embeddings(path) -> pd.DataFrame:
    """Read a table written by :func:`write_embeddings` (``id`` as text, features float32)."""
    import pandas as pd

    path = Path(path)
    suffix = table_suffix(path)
    if not path.is_file():
        raise InputError(f"{path}: no such embeddings file")
    try:
        table = pd.read_csv(path, dtype={"id": str}) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as error:
        raise InputError(f"{path}: cannot be read as a {suffix[1:]} table ({str(error).strip()[:120]})") from None
    if "id" not in table.columns:
        raise InputError(f"{path}: has no 'id' column; not an embeddings table")
    features = [c for c in table.columns if c != "id" and not str(c).startswith("qct_")]
    return table.astype({c: FEATURE_DTYPE for c in features})
