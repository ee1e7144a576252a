"""Pattern maps, pattern shares and the emphysema extent of a case from the pattern CNN, and
the classification of single lung images (ROIs, patches).

Case: the CT goes to the model's working grid (in-plane ``pixel_mm``, ``slice_mm`` between the
axial images it looks at; SimpleITK, anti-aliased: :func:`.tiles.to_working_grid`); every axial
image holding lung is cropped to the lung's bounding box with non-lung pixels at FILL_HU and run
through the network in batches. Its dense outputs (stride 4) are upsampled bilinearly to the
working grid: the six pattern probabilities -> the pattern label (codes 1-6 = PATTERNS order, 0
outside the lung) and the emphysema fraction map. The label rule is the model's ``map_rule``
(config.json): ``argmax`` (models before issue 25: the most probable pattern, normal wherever the
calibrated fraction is 0) or ``extent`` (the lung's voxels of highest emphysema fraction, as many
as the extent says, carry the most probable *emphysema* pattern there, the rest is normal: the
map's emphysema share is the extent, one story). The label map goes back to the CT grid by
nearest neighbour, the fraction map linearly.

Outputs per case (``summary["patterns"]``): the share of lung (%) in each pattern per region
(CIP's local-histogram output is the same kind of tally), the lung-mean probabilities, the
dominant pattern; the extent (% of lung) = mean of the (calibrated) fraction map over the lung,
with class and class probabilities as :mod:`.case_extent` defines them.
"""
from __future__ import annotations

import time

import numpy as np

from ..analysis.patterns import PATTERN_GROUPS, PATTERNS, group_probabilities
from ..analysis.regions import lung_regions
from ..analysis.severity import SEVERITY_CUTPOINTS
from .case_extent import SeverityResult, extent_summary, model_extent_sigma
from .checkpoint import load_model, model_dir, pick_device
from .pattern_augment import center_resample
from .pattern_net import STRIDE
from .tiles import FILL_HU, extract_tiles, tile_corners, to_working_grid

MAP_RULES = ("argmax", "extent")

MARGIN_PX = 8
EXPLAIN_TILE = 64   # tiles the explanations run on (pixels at the working pixel size, one slice)


def _crop_box(lung: np.ndarray) -> tuple:
    """(y0, y1, x0, x1) of the lung's in-plane bounding box with a margin, sides multiples of
    STRIDE (may reach outside the image: padded with FILL_HU)."""
    ys, xs = np.flatnonzero(lung.any(axis=(0, 2))), np.flatnonzero(lung.any(axis=(0, 1)))
    y0, x0 = ys[0] - MARGIN_PX, xs[0] - MARGIN_PX
    h = -(-(ys[-1] + MARGIN_PX + 1 - y0) // STRIDE) * STRIDE
    w = -(-(xs[-1] + MARGIN_PX + 1 - x0) // STRIDE) * STRIDE
    return int(y0), int(y0 + h), int(x0), int(x0 + w)


def _window(volume: np.ndarray, box, fill) -> np.ndarray:
    y0, y1, x0, x1 = box
    ny, nx = volume.shape[-2:]
    pad = ((0, 0), (max(0, -y0), max(0, y1 - ny)), (max(0, -x0), max(0, x1 - nx)))
    padded = np.pad(volume, pad, constant_values=fill)
    return padded[:, y0 + pad[1][0]:y1 + pad[1][0], x0 + pad[2][0]:x1 + pad[2][0]]


#: a fused map's voxel is labelled with an emphysema pattern only at this probability or above
FUSED_LABEL_P = 0.5


class PatternPredictor:
    """A loaded pattern model ready for cases and images; ``device`` auto picks CUDA, MPS, CPU."""

    def __init__(self, model_path=None, device: str = "auto", batch_size: int = 16):
        import torch

        self.device = pick_device(device)
        self.model, self.config = load_model(model_path, self.device)
        if self.config["architecture"].get("kind") != "pattern":
            raise ValueError(f"{model_dir(model_path)} holds a severity model, not a pattern model")
        self.path = model_dir(model_path)
        self.batch_size = batch_size
        self.torch = torch
        self.pixel_mm = float(self.config["architecture"]["pixel_mm"])
        training = self.config.get("training", {}).get("config", {})
        self.mask_chest_wall = bool(training.get("mask_chest_wall", False))
        self.map_rule = self.config.get("map_rule", "argmax")
        if self.map_rule not in MAP_RULES:
            raise ValueError(f"{self.path}: map_rule {self.map_rule!r} is not one of {', '.join(MAP_RULES)}")
        #: the ``fusion`` block of config.json (:mod:`.pattern_fusion`) or None: the fraction map as before
        self.fusion = self.config.get("fusion")

    @property
    def working_spacing(self) -> tuple:
        """(x, y, z) mm of the model's working grid: ``pixel_mm`` in-plane, ``slice_mm`` between images."""
        return (self.pixel_mm, self.pixel_mm, float(self.config["architecture"]["slice_mm"]))

    @property
    def fusion_window_mm(self) -> float:
        from .pattern_fusion import WINDOW_MM

        return float((self.fusion or {}).get("window_mm", WINDOW_MM))

    @property
    def info(self) -> dict:
        return {"name": self.config.get("name", self.path.name), "sha256": self.config["weights_sha256"]}

    def run_tiles(self, images: np.ndarray, model=None) -> dict:
        """Tile outputs for (n, 1, P, P) HU tiles with non-lung at FILL_HU, batched:
        ``fraction`` (n,) (lung-weighted mean of the tile's fraction map, before calibration)
        and ``embedding`` (n, C), tensors on the CPU; ``model`` another network (default: this
        predictor's)."""
        torch = self.torch
        model = self.model if model is None else model
        fractions, embeddings = [], []
        with torch.inference_mode():
            for start in range(0, len(images), 64):
                x = torch.from_numpy(np.ascontiguousarray(images[start:start + 64], np.float32)).to(self.device)
                out = model(x, (x < FILL_HU - 0.5).float())
                fractions.append(out["fraction"].float().cpu())
                embeddings.append(out["embedding"].float().cpu())
        return {"fraction": torch.cat(fractions), "embedding": torch.cat(embeddings)}

    def _extent_config(self) -> dict:
        """The config the class probabilities read: a calibrated fusion block carries the SD of its
        own phantom extent error (``extent_sigma``), which then replaces the fraction map's."""
        return {**self.config, "extent_sigma": model_extent_sigma(self.config, self.fusion)}

    def _calibrated(self, fraction):
        slope, intercept = self.config.get("extent_calibration", (1.0, 0.0))
        return np.clip(slope * fraction + intercept / 100.0, 0.0, 1.0)

    def classify_images(self, images: list, pixel_mm: float) -> tuple:
        """(probabilities (n, 6), emphysema fraction (n,)) of 2D HU images (each (H, W), any size,
        all lung) with square pixels of ``pixel_mm``; each image is resampled whole. A model
        trained with ``mask_chest_wall`` sees an image's chest-wall band
        (:func:`.cip_patches.chest_wall_mask`) as non-lung, as in its training."""
        torch = self.torch
        probs, fractions = [], []
        with torch.inference_mode():
            for image in images:
                image = np.asarray(image, np.float32)
                side = max(image.shape)
                size = max(STRIDE, int(round(side * pixel_mm / self.pixel_mm / STRIDE)) * STRIDE)
                padded = np.pad(image, ((0, side - image.shape[0]), (0, side - image.shape[1])), mode="reflect")
                x = center_resample(torch.from_numpy(padded)[None, None], pixel_mm, self.pixel_mm, size)
                lung = None
                if self.mask_chest_wall:
                    from .cip_patches import chest_wall_mask

                    wall = torch.from_numpy(chest_wall_mask(padded[None])[:, None].astype(np.float32))
                    lung = (center_resample(wall, pixel_mm, self.pixel_mm, size) <= 0.5).float()
                    x = torch.where(lung > 0, x, torch.full_like(x, FILL_HU))
                    lung = lung.to(self.device)
                out = self.model(x.to(self.device), lung)
                probs.append(torch.softmax(out["pattern_logits"].float(), 1).cpu().numpy()[0])
                fractions.append(float(out["fraction"][0]))
        return np.stack(probs), self._calibrated(np.asarray(fractions))

    def _maps(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """(n, 7, H, W) float32: the six pattern probabilities and the fraction map (before
        calibration) of (n, H, W) HU images at the model's pixel size (``mask``: bool lung or
        None = all lung), upsampled bilinearly from the network's stride."""
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(image[:, None].astype(np.float32)).to(self.device)
            m = None if mask is None else torch.from_numpy(mask[:, None]).to(self.device)
            out = self.model(x, m)
            return torch.nn.functional.interpolate(
                torch.cat([torch.softmax(out["pattern_map"].float(), 1), out["fraction_map"][:, None].float()], 1),
                size=image.shape[-2:], mode="bilinear", align_corners=False).cpu().numpy()

    def dense_images(self, images: np.ndarray) -> dict:
        """``fraction`` (before calibration) and ``p_normal`` maps (n, H, W) of (n, H, W) HU
        images at the model's pixel size, all lung (patches, mosaics)."""
        up = np.concatenate([self._maps(images[s:s + 64], None) for s in range(0, len(images), 64)])
        return {"fraction": up[:, -1], "p_normal": up[:, 0]}

    def dense_volume(self, hu: np.ndarray, lung: np.ndarray) -> dict:
        """``fraction`` (before calibration, 0 outside the lung) and ``p_normal`` maps (z, y, x) of a
        working-grid volume, as a case is run."""
        _, _, fraction, _, p_normal = self._dense(hu, lung)
        return {"fraction": fraction, "p_normal": p_normal}

    def fused_images(self, images: list, pixel_mm: float, block: dict | None = None) -> np.ndarray:
        """(n,) fused extent (0-1: the image mean of the fused map, :mod:`.pattern_fusion`) of 2D
        HU images (each (H, W), all lung) with square pixels of ``pixel_mm``, each resampled whole
        as :meth:`classify_images` does; ``block`` default: this model's ``fusion``."""
        from .pattern_fusion import features, fused_map

        block = block or self.fusion
        out = []
        for image in images:
            image = np.asarray(image, np.float32)
            side = max(image.shape)
            size = max(STRIDE, int(round(side * pixel_mm / self.pixel_mm / STRIDE)) * STRIDE)
            padded = np.pad(image, ((0, side - image.shape[0]), (0, side - image.shape[1])), mode="reflect")
            x = center_resample(self.torch.from_numpy(padded)[None, None], pixel_mm, self.pixel_mm, size)[:, 0].numpy()
            maps = self.dense_images(x)
            feats = features(x, np.ones(x.shape, bool), maps["fraction"], maps["p_normal"], self.pixel_mm,
                             float(block["window_mm"]), block["features"])
            out.append(float(fused_map(feats, block).mean()))
        return np.asarray(out)

    def _dense(self, hu: np.ndarray, lung: np.ndarray, progress=None) -> tuple:
        """(labels (z, y, x) uint8 codes of the ``argmax`` rule, the code of the most probable
        emphysema pattern (z, y, x) uint8 (2-6), fraction (z, y, x) float32 (before calibration),
        probability sums (6,), p(normal) (z, y, x) float32) on the working grid for HU ``hu`` and
        bool ``lung``."""
        labels = np.zeros(hu.shape, np.uint8)
        emphysema_codes = np.zeros(hu.shape, np.uint8)
        fraction = np.zeros(hu.shape, np.float32)
        p_normal = np.ones(hu.shape, np.float32)
        prob_sum = np.zeros(len(PATTERNS))
        box = _crop_box(lung)
        y0, y1, x0, x1 = box
        ny, nx = hu.shape[1:]
        inner = (slice(max(0, -y0), max(0, -y0) + min(y1, ny) - max(y0, 0)),
                 slice(max(0, -x0), max(0, -x0) + min(x1, nx) - max(x0, 0)))
        target = (slice(max(y0, 0), min(y1, ny)), slice(max(x0, 0), min(x1, nx)))
        slices = np.flatnonzero(lung.any(axis=(1, 2)))
        for start in range(0, len(slices), self.batch_size):
            zs = slices[start:start + self.batch_size]
            mask = _window(lung[zs], box, False)
            image = np.where(mask, _window(hu[zs], box, FILL_HU), np.float32(FILL_HU))
            up = self._maps(image, mask)
            probs = up[:, :len(PATTERNS)]
            # an emphysema pattern needs emphysema: where the fraction model (calibrated) sees
            # none, the location is normal (the pattern trunk alone called the lung borders
            # of an LIDC slice without emphysema paraseptal: CIP's paraseptal patches hold chest wall)
            empty = self._calibrated(up[:, -1]) <= 0.0
            codes = np.where(mask, np.where(empty, 1, probs.argmax(1) + 1), 0).astype(np.uint8)
            emphysema = np.where(mask, probs[:, 1:].argmax(1) + 2, 0).astype(np.uint8)
            for i, z in enumerate(zs):
                labels[z, target[0], target[1]] = codes[i, inner[0], inner[1]]
                emphysema_codes[z, target[0], target[1]] = emphysema[i, inner[0], inner[1]]
                fraction[z, target[0], target[1]] = (up[i, -1] * mask[i])[inner[0], inner[1]]
                p_normal[z, target[0], target[1]] = up[i, 0][inner[0], inner[1]]
            prob_sum += (probs * mask[:, None]).sum(axis=(0, 2, 3))
            if progress is not None:
                done = min(start + self.batch_size, len(slices))
                progress(done / len(slices), f"grading severity with the CNN: slice {done} of {len(slices)}")
        return labels, emphysema_codes, fraction, prob_sum, p_normal

    @staticmethod
    def _extent_labels(emphysema_codes: np.ndarray, fraction_raw: np.ndarray, fraction_map: np.ndarray,
                       lung: np.ndarray, extent_pct: float, exact: bool = False, floor: float = 0.0) -> np.ndarray:
        """The ``extent`` rule's (z, y, x) uint8 label codes: round(extent % x lung voxels) voxels of
        highest fraction (among those whose calibrated fraction, ``fraction_map``: 0 outside the
        lung, is above ``floor``: 0, or :data:`FUSED_LABEL_P` for a fused map) carry their most
        probable emphysema pattern, every other lung voxel is normal (1); so the labelled share is
        at most the extent. ``exact`` (fused maps): exactly that many voxels, ties broken by position."""
        labels = np.where(lung, 1, 0).astype(np.uint8)
        values = fraction_raw[lung]
        positive = fraction_map > floor
        count = min(int(round(extent_pct / 100.0 * values.size)), int(positive.sum()))
        if count > 0 and exact:
            # exactly ``count`` voxels (ties broken by position): a fused map has many equal values
            index = np.flatnonzero((lung & positive).ravel())
            top = index[np.argpartition(-fraction_raw.ravel()[index], count - 1)[:count]]
            chosen = np.zeros(lung.size, bool)
            chosen[top] = True
            chosen = chosen.reshape(lung.shape)
            labels[chosen] = emphysema_codes[chosen]
        elif count > 0:
            threshold = np.partition(values, values.size - count)[values.size - count]
            chosen = positive & (fraction_raw >= threshold)
            labels[chosen] = emphysema_codes[chosen]
        return labels

    def predict(self, ct, labels: np.ndarray, lobes: np.ndarray | None = None, cutpoints=SEVERITY_CUTPOINTS,
                extra: dict | None = None, calibration=None, progress=None) -> SeverityResult:
        """Patterns and extent of ``ct`` (CTVolume, HU) within its (z, y, x) lung ``labels``;
        ``progress(fraction, message)``: called after each batch of slices the network ran on;
        the result's ``pattern_labels`` is on the CT grid, ``fraction_map`` on the working grid
        (:func:`.tiles.from_working_grid` brings it to the CT grid when wanted).
        ``calibration`` (a :class:`~EmphysemaXAILib.analysis.calibration.Calibration`): the model sees
        calibrated HU (applied on the working grid: a linear map commutes with the resampling)."""
        timings, start = {}, time.perf_counter()
        extra = {**(extra or {}), **({"lobes": lobes} if lobes is not None else {})}
        grid = to_working_grid(ct, labels, extra=extra, spacing=self.working_spacing)
        lung = grid.labels > 0
        if not lung.any():
            raise ValueError("no lung voxels on the model's working grid")
        if calibration is not None:
            grid.hu = calibration.apply(grid.hu).astype(np.float32)
        timings["resample"] = time.perf_counter() - start
        start = time.perf_counter()
        pattern_w, emphysema_codes, fraction_raw, prob_sum, p_normal = self._dense(grid.hu, lung, progress)
        timings["network"] = time.perf_counter() - start
        start = time.perf_counter()
        if self.fusion:
            # the fused map (texture + local calibrated density, :mod:`.pattern_fusion`) replaces the
            # calibrated fraction map for the extent and the extent rule
            from .pattern_fusion import features, fused_map

            feats = features(grid.hu, lung, fraction_raw, p_normal, self.pixel_mm, self.fusion_window_mm,
                             self.fusion["features"])
            fraction_raw = (fused_map(feats, self.fusion) * lung).astype(np.float32)
            del feats
            fraction_map = fraction_raw
        else:
            fraction_map = (self._calibrated(fraction_raw) * lung).astype(np.float32)
        del p_normal
        regions = lung_regions(grid.labels, grid.extra.get("lobes"), grid.superior_is_high_index)
        values = regions.gather(fraction_map)
        extent = float(100.0 * values.mean())
        if self.map_rule == "extent":
            # a fused map is a probability: only voxels more likely emphysema than not are labelled
            # (its residual probability over normal lung still counts in the extent; the LIDC slices
            # read 2.0 % that, as scattered specks on lung without any low attenuation)
            pattern_w = self._extent_labels(emphysema_codes, fraction_raw, fraction_map, lung, extent,
                                           exact=bool(self.fusion), floor=FUSED_LABEL_P if self.fusion else 0.0)
        del emphysema_codes
        codes = regions.gather(pattern_w)
        shares = {}
        for name, mask in regions.masks.items():
            counts = np.bincount(codes[mask], minlength=len(PATTERNS) + 1)[1:]
            shares[name] = ({p: float(100.0 * c / counts.sum()) for p, c in zip(PATTERNS, counts)}
                            if counts.sum() else None)
        mean_probs = prob_sum / max(prob_sum.sum(), 1e-9)
        grouped = group_probabilities(mean_probs[None])[0]
        patterns = {
            "classes": list(PATTERNS),
            "share_by_region": shares,
            "probabilities": {p: float(v) for p, v in zip(PATTERNS, mean_probs)},
            "group_probabilities": {g: float(v) for g, v in zip(PATTERN_GROUPS, grouped)},
            "dominant": PATTERNS[int(np.argmax([shares["whole"][p] for p in PATTERNS]))],
            "emphysema_share_pct": float(100.0 - shares["whole"]["normal"]),
            # the broad emphysema pattern covering the most lung (None without any): the leading pattern
            "leading_emphysema": _leading(shares["whole"]),
            "label_codes": {p: i + 1 for i, p in enumerate(PATTERNS)},
            "map_rule": self.map_rule,
            # which map gives the extent (and the extent rule's ranking): the fraction trunk's
            # (calibrated) or the fused texture + density map of a ``fusion`` block
            "extent_map": "fused" if self.fusion else "fraction",
        }
        summary = {
            **extent_summary(extent, regions, values, self._extent_config(), cutpoints),
            "model": self.info,
            "patterns": patterns,
            "input_hu": (f"calibrated ({calibration.air_source} air, {calibration.reference})"
                         if calibration is not None else "raw"),
            "working_spacing": list(grid.spacing),
            "device": self.device.type,
            "low_confidence": grid.low_confidence,
            "notes": list(grid.notes),
        }
        corners = tile_corners(lung, EXPLAIN_TILE, 1)
        tiles, gathered = extract_tiles(grid.hu, lung, corners, EXPLAIN_TILE, 1, extra={"fraction": fraction_map})
        counts = tiles.lung_count.astype(np.float64)
        tile_fraction = (gathered["fraction"].sum(axis=(1, 2, 3)) / np.maximum(counts, 1)).astype(np.float32)
        summary["tiles"] = len(tiles)
        lung_ct = labels > 0
        result = SeverityResult(summary, grid, tiles, tile_fraction, (counts / counts.sum()).astype(np.float32),
                              fraction_map, timings, tile_priority=tile_fraction * counts,
                              pattern_labels=_labels_to_ct(pattern_w, grid, ct, lung_ct))
        timings["outputs"] = time.perf_counter() - start
        return result


def _leading(whole: dict) -> str | None:
    """The broad emphysema pattern (centrilobular = its three grades) with the largest share of
    lung in ``whole`` ({pattern: %}), None when the lung is all normal."""
    broad = {g: sum(whole[PATTERNS[i]] for i in idx) for g, idx in PATTERN_GROUPS.items() if g != "normal"}
    return max(broad, key=broad.get) if max(broad.values()) > 0 else None


def _labels_to_ct(volume: np.ndarray, grid, ct, lung: np.ndarray) -> np.ndarray:
    """A (z, y, x) uint8 label volume on the working grid -> the CT grid (nearest neighbour),
    every voxel of the CT's ``lung`` mask labelled: the working-grid labels first grow two voxels
    in-plane into their unlabelled surroundings (a CT lung voxel at the edge can fall on a
    working voxel outside the resampled mask), anything still unlabelled in the lung is normal."""
    import SimpleITK as sitk
    from scipy.ndimage import grey_dilation

    if volume.shape == ct.shape and np.allclose(grid.spacing, ct.spacing, rtol=0.01):
        return np.where(lung, np.maximum(volume, 1), 0).astype(np.uint8)
    volume = volume.copy()
    zs = np.flatnonzero(volume.any(axis=(1, 2)))
    if len(zs):
        part = volume[zs[0]:zs[-1] + 1]
        for _ in range(2):
            part = np.where(part == 0, grey_dilation(part, size=(1, 3, 3)), part)
        volume[zs[0]:zs[-1] + 1] = part
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, np.uint8))
    image.SetSpacing([float(s) for s in grid.spacing])
    image.SetOrigin([float(o) for o in ct.origin])
    image.SetDirection([float(d) for d in ct.direction])
    reference = sitk.Image([int(n) for n in ct.shape[::-1]], sitk.sitkUInt8)
    reference.SetSpacing([float(s) for s in ct.spacing])
    reference.SetOrigin([float(o) for o in ct.origin])
    reference.SetDirection([float(d) for d in ct.direction])
    out = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    # in place (uint8): np.where(lung, max(out, 1), 0) without three CT-size temporaries
    np.maximum(out, 1, out=out)
    np.multiply(out, lung, out=out)
    return out
