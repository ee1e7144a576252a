"""The severity model's predictor: a case -> working grid -> lung tiles -> batched CNN ->
extent (lung-weighted mean of the tile fractions), per-region extent, class probabilities.

Class, probabilities and the extent calibration are those of :mod:`.case_extent` (one
definition for both models). The model's attention-pooled class head is reported beside it
(``class_head``) for comparison, and its patch weights are kept for the explanations.
"""
from __future__ import annotations

import time

import numpy as np

from ..analysis.regions import lung_regions
from ..analysis.severity import SEVERITY_CLASSES, SEVERITY_CUTPOINTS
from .case_extent import SeverityResult, extent_summary
from .checkpoint import load_model, model_dir, pick_device
from .tiles import extract_tiles, paint_tiles, tile_corners, to_working_grid


class SeverityPredictor:
    """A loaded model ready for cases; ``device`` auto picks CUDA, MPS or the CPU."""

    fusion = None   # severity model v1 has no fused map (the pattern predictor's ``fusion`` block)

    def __init__(self, model_path=None, device: str = "auto", batch_size: int = 128):
        import torch

        self.device = pick_device(device)
        self.model, self.config = load_model(model_path, self.device)
        self.path = model_dir(model_path)
        self.batch_size = batch_size
        self.torch = torch

    @property
    def info(self) -> dict:
        return {"name": self.config.get("name", self.path.name), "sha256": self.config["weights_sha256"]}

    def run_tiles(self, images: np.ndarray, model=None, progress=None) -> dict:
        """Patch outputs for (n, S, P, P) HU tiles, batched: ``fraction`` (n,), ``embedding``
        (n, C) (tensors on the CPU); ``model`` another network on the same device (default: this
        predictor's); ``progress(fraction, message)`` after each batch."""
        torch = self.torch
        model = self.model if model is None else model
        fractions, embeddings = [], []
        amp = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=amp):
            for start in range(0, len(images), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size], np.float32))
                out = model(batch.to(self.device))
                fractions.append(out["fraction"].float().cpu())
                embeddings.append(out["embedding"].float().cpu())
                if progress is not None:
                    done = min(start + self.batch_size, len(images))
                    progress(done / len(images), f"grading severity with the CNN: tile {done} of {len(images)}")
        return {"fraction": torch.cat(fractions), "embedding": torch.cat(embeddings)}

    def predict(self, ct, labels: np.ndarray, lobes: np.ndarray | None = None, cutpoints=SEVERITY_CUTPOINTS,
                extra: dict | None = None, progress=None) -> SeverityResult:
        """Severity of ``ct`` (CTVolume) within its (z, y, x) lung ``labels`` (1 right, 2 left);
        ``progress(fraction, message)`` after each batch of tiles;
        ``extra`` label maps on the CT grid are resampled onto the working grid alongside
        (``result.grid.extra``)."""
        torch = self.torch
        arch = self.config["architecture"]
        size, slices = arch["size"], arch["slices"]
        timings = {}
        start = time.perf_counter()
        extra = {**(extra or {}), **({"lobes": lobes} if lobes is not None else {})}
        grid = to_working_grid(ct, labels, extra=extra, spacing=tuple(self.config["working_spacing"]))
        lung = grid.labels > 0
        if not lung.any():
            raise ValueError("no lung voxels on the model's working grid")
        corners = tile_corners(lung, size, slices)
        tiles, _ = extract_tiles(grid.hu, lung, corners, size, slices)
        timings["tiling"] = time.perf_counter() - start
        start = time.perf_counter()
        out = self.run_tiles(tiles.images, progress=progress)
        count = torch.from_numpy(tiles.lung_count.astype(np.float32))
        with torch.inference_mode():
            case = self.model.case({k: v.to(self.device) for k, v in out.items()},
                                   (count / tiles.images[0].size).to(self.device))
        timings["network"] = time.perf_counter() - start
        fractions = out["fraction"].numpy()
        slope, intercept = self.config.get("extent_calibration", (1.0, 0.0))
        fractions = np.clip(slope * fractions + intercept / 100.0, 0.0, 1.0).astype(np.float32)
        counts = tiles.lung_count
        extent = float(100.0 * (fractions * counts).sum() / counts.sum())
        fraction_map = paint_tiles(lung.shape, corners, fractions, size, slices) * lung
        regions = lung_regions(grid.labels, grid.extra.get("lobes"), grid.superior_is_high_index)
        head = torch.softmax(case["class_logits"].float(), 0).cpu().numpy()
        summary = {
            **extent_summary(extent, regions, regions.gather(fraction_map), self.config, cutpoints),
            "model": self.info,
            "class_head": {name: float(p) for name, p in zip(SEVERITY_CLASSES, head)},
            "tiles": len(tiles),
            "working_spacing": list(grid.spacing),
            "device": self.device.type,
            "low_confidence": grid.low_confidence,
            "notes": list(grid.notes),
        }
        return SeverityResult(summary, grid, tiles, fractions, case["patch_weights"].float().cpu().numpy(),
                              fraction_map, timings)
