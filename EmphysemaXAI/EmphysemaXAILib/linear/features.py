"""The feature table ``fit_linear`` learns from: embeddings of labelled 2D images, or a
case-embeddings table narrowed to some lung zones.

Tables are pandas DataFrames with an ``id`` column, optional ``qct_*`` columns and one column
per embedding feature named ``<zone>_<index>`` (zones: upper, middle, lower) or ``f<index>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..analysis.regions import THIRDS
from ..errors import InputError

if TYPE_CHECKING:
    import pandas as pd


def labelled_image_embeddings(folder, labels, backbone) -> pd.DataFrame:
    """Embeddings of the images the labels table names (``path`` relative to ``folder``), with
    ``id`` set to that relative path (posix form) so the tables join."""
    from ..embed import embed_images

    if "path" not in labels.columns:
        raise InputError("with images the labels CSV needs a 'path' column (image paths relative to the folder)")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of images")
    relative = [str(p).replace("\\", "/") for p in labels["path"]]
    missing = [p for p in relative if not (folder / p).is_file()]
    if missing:
        raise InputError(f"{len(missing)} labelled images are not in {folder}, e.g. {missing[0]!r}")
    table = embed_images([folder / p for p in relative], backbone)
    table["id"] = relative
    return table


def zone_columns(features, zones: str) -> pd.DataFrame:
    """The table with only the feature columns of ``zones`` (comma-separated upper, middle, lower),
    keeping ``id`` and the ``qct_*`` columns."""
    chosen = [z.strip() for z in zones.split(",") if z.strip()]
    unknown = [z for z in chosen if z not in THIRDS]
    if unknown or not chosen:
        raise InputError(f"zones {zones!r}: use a comma-separated subset of {', '.join(THIRDS)}")
    kept = [c for c in features.columns if c == "id" or str(c).startswith("qct_")]
    keep = [c for c in features.columns if c in kept or str(c).split("_")[0] in chosen]
    if len(keep) == len(kept):
        raise InputError(f"the embeddings table has no {'/'.join(chosen)} zone columns (it may come from images)")
    return features[keep]
