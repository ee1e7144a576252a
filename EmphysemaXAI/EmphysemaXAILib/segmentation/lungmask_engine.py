"""The lungmask engine (JoHof/lungmask, a 2D U-Net per axial slice) and its weights.

Models: R231 (1 right, 2 left lung) and, for lobes, LTRCLobes fused with R231 (lungmask's
fusion mode: LTRCLobes labels, R231 fills what it misses). Weights come, in this order, from
the file the caller names, the environment variables ``EMPHYSEMA_XAI_LUNGMASK_WEIGHTS`` /
``EMPHYSEMA_XAI_LUNGMASK_FILL_WEIGHTS``, or lungmask's own torch hub cache
(``$TORCH_HOME/hub/checkpoints/<published file name>``, where lungmask's download puts them on
a machine with internet). Published files carry the first 8 hex digits of their SHA-256 in
their name (torch hub's convention); a file whose digest does not match is used but reported.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.files import sha256

#: Published lungmask weights: model name -> (file name, download URL).
PUBLISHED = {
    "R231": ("unet_r231-d5d2fc3d.pth",
             "https://github.com/JoHof/lungmask/releases/download/v0.0/unet_r231-d5d2fc3d.pth"),
    "LTRCLobes": ("unet_ltrclobes-3a07043d.pth",
                  "https://github.com/JoHof/lungmask/releases/download/v0.0/unet_ltrclobes-3a07043d.pth"),
}
ENV_WEIGHTS = "EMPHYSEMA_XAI_LUNGMASK_WEIGHTS"
ENV_FILL_WEIGHTS = "EMPHYSEMA_XAI_LUNGMASK_FILL_WEIGHTS"


class WeightsMissing(InputError):
    """lungmask weights are not on this machine (the message says where they are expected)."""


@dataclass
class LungmaskResult:
    labels: np.ndarray          # uint8 (z, y, x): 1 right, 2 left
    lobes: np.ndarray | None    # uint8 LTRCLobes codes when lobes were asked for
    weights: dict               # model -> {"path", "sha256", "published"}
    warnings: list


def hub_dir() -> Path:
    """torch hub's folder: ``torch.hub.get_dir()`` once torch is loaded (it honours
    ``torch.hub.set_dir``), else torch's documented default, ``$TORCH_HOME/hub`` with
    ``$TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch`` (``~/.cache/torch``), so the dependency
    check can look there before torch is installed."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir())
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(home).expanduser() / "hub"


def hub_checkpoint(model: str) -> Path:
    """Where lungmask's own download stores ``model``'s weights (torch hub cache)."""
    return hub_dir() / "checkpoints" / PUBLISHED[model][0]


def weights_found(model: str = "R231", given=None, env: str = ENV_WEIGHTS) -> bool:
    """Whether :func:`resolve_weights` would find ``model``'s weights here (the file given, the
    environment variable's, or the torch hub cache, :func:`hub_checkpoint`), without importing
    torch (the dependency check runs before torch is installed)."""
    candidates = [given, os.environ.get(env)] if model == "R231" else [given]
    if any(c and Path(c).expanduser().is_file() for c in candidates):
        return True
    return hub_checkpoint(model).is_file()


def download_weights(model: str) -> Path:
    """Fetch ``model``'s published weights into the torch hub cache the way lungmask does
    (``torch.hub.load_state_dict_from_url``, SHA-256 prefix checked); needs internet."""
    import torch

    name, url = PUBLISHED[model]
    torch.hub.load_state_dict_from_url(url, progress=True, map_location="cpu", check_hash=True,
                                       weights_only=True)
    return hub_checkpoint(model)


def fetch_weights(model: str = "R231") -> tuple[Path, list]:
    """``model``'s published weights in the torch hub cache, downloaded there first when missing
    through lungmask's own loading path (``lungmask.mask.get_model(model)``, which calls
    ``torch.hub.load_state_dict_from_url``): the file lungmask itself would use. Needs internet
    when the file is not cached; returns (path, warnings: the digest check of
    :func:`weights_record`).

    Raises:
        ImportError: lungmask (or torch) is not installed.
        WeightsMissing: the download failed (the message names the URL and where to put the file).
    """
    cached = hub_checkpoint(model)
    if not cached.is_file():
        from lungmask import mask

        try:
            mask.get_model(model)
        except Exception as error:  # no internet, proxy, disk ...
            raise WeightsMissing(f"lungmask {model} weights could not be downloaded from {PUBLISHED[model][1]} "
                                 f"({type(error).__name__}: {error}); put the file at {cached}") from None
        if not cached.is_file():
            raise WeightsMissing(f"lungmask {model} weights: lungmask's download left no file at {cached}")
    warnings: list = []
    weights_record(model, cached, warnings)
    return cached, warnings


def resolve_weights(model: str, given=None, env: str = ENV_WEIGHTS, download: bool = False) -> Path:
    """The weights file of ``model``: given path, environment variable, torch hub cache, or (with
    ``download``) lungmask's published file fetched into that cache."""
    for candidate, origin in ((given, "the given path"), (os.environ.get(env), f"${env}")):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise InputError(f"lungmask {model} weights not found at {path} ({origin}); "
                                 "check the path")
            return path
    cached = hub_checkpoint(model)
    if cached.is_file():
        return cached
    name, url = PUBLISHED[model]
    if download:
        try:
            return download_weights(model)
        except Exception as error:  # no internet, proxy, hash mismatch ...
            raise WeightsMissing(f"lungmask {model} weights could not be downloaded from {url} "
                                 f"({type(error).__name__}: {error}); put the file at {cached} or pass "
                                 f"lungmask_weights (--lungmask-weights PATH)") from None
    raise WeightsMissing(
        f"lungmask {model} weights not found: expected {cached}; on a machine with internet "
        f"download {url} to that path (lungmask does it on first use), or pass "
        f"lungmask_weights (--lungmask-weights PATH) / set {env}")


def weights_record(model: str, path: Path, warnings: list) -> dict:
    """Digest of a weights file and whether it is the published one (warns when not)."""
    digest = sha256(path)
    expected = PUBLISHED[model][0].rsplit("-", 1)[1].split(".")[0]
    published = digest.startswith(expected)
    if not published:
        warnings.append(f"lungmask {model} weights {path.name} are not the published ones "
                        f"(sha256 {digest[:12]}..., expected {expected}...): results may differ")
    return {"path": str(path), "sha256": digest, "published": published}


def run_lungmask(ct, weights=None, fill_weights=None, lobes: bool = False, batch_size: int = 20,
                 force_cpu: bool = False, download: bool = False) -> LungmaskResult:
    """Segment with lungmask's ``LMInferer`` (R231, or LTRCLobes + R231 fusion for lobes).

    Args:
        ct: a :class:`~EmphysemaXAILib.volume.CTVolume`; lungmask reorients it to LPS itself.
        weights / fill_weights: files of the main (R231 or LTRCLobes) and fill (R231) models.
        download: fetch missing published weights into the torch hub cache (needs internet).
    Raises:
        WeightsMissing: a weights file is not on this machine.
    """
    from lungmask import LMInferer

    warnings: list = []
    if lobes:
        main_path = resolve_weights("LTRCLobes", weights, download=download)
        fill_path = resolve_weights("R231", fill_weights, ENV_FILL_WEIGHTS, download=download)
        record = {"LTRCLobes": weights_record("LTRCLobes", main_path, warnings),
                  "R231": weights_record("R231", fill_path, warnings)}
        inferer = LMInferer(modelpath=str(main_path), fillmodel_path=str(fill_path),
                            force_cpu=force_cpu, batch_size=batch_size, tqdm_disable=True)
    else:
        main_path = resolve_weights("R231", weights, download=download)
        record = {"R231": weights_record("R231", main_path, warnings)}
        inferer = LMInferer(modelpath=str(main_path), force_cpu=force_cpu, batch_size=batch_size,
                            tqdm_disable=True)
    image = ct.to_sitk()
    result = inferer.apply(image).astype(np.uint8)
    if lobes:
        lobe_map = result
        # LTRCLobes codes: 1 LUL, 2 LLL (left); 3 RUL, 4 RML, 5 RLL (right); fill label -> by side
        labels = np.zeros_like(lobe_map)
        labels[np.isin(lobe_map, (3, 4, 5))] = 1
        labels[np.isin(lobe_map, (1, 2))] = 2
        lobe_map[lobe_map > 5] = 0
        return LungmaskResult(labels, lobe_map, record, warnings)
    return LungmaskResult(result, None, record, warnings)
