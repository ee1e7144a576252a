"""Embeddings of lung zone patches by frozen 2D backbones (the seeds' ResNet embedding pipeline).

``zone_patches(ct, labels)`` cuts the upper / middle / lower 2.5D patches of a case,
``load_backbone(name)`` gives EfficientNet-Lite0 (default), ResNet-152 or the project's own CNN,
``embed_cases`` / ``embed_images`` build the table (``id``, QCT markers, features) that
``write_embeddings`` saves as CSV or Parquet and the linear models read.
"""
from ..io.files import case_id  # noqa: F401
from .backbones import BACKBONES, Backbone, load_backbone  # noqa: F401
from .extract import case_row, embed_cases, embed_images, qct_markers, read_embeddings, table_suffix, write_embeddings  # noqa: F401
from .zones import HU_CLIP, ZonePatches, save_zone_preview, window, zone_patches  # noqa: F401

__all__ = ["BACKBONES", "Backbone", "load_backbone", "case_id", "case_row", "embed_cases", "embed_images",
           "qct_markers", "read_embeddings", "table_suffix", "write_embeddings", "HU_CLIP", "ZonePatches",
           "save_zone_preview", "window", "zone_patches"]
