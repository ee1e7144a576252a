"""Saving and loading models (either kind) and picking the device they run on.

A model is a folder with ``weights.pt`` (a state dict of tensors, loaded with
``torch.load(..., weights_only=True)``) and ``config.json`` (architecture, working spacing,
calibration, training record and the weights' SHA-256, checked at every load).

Two models live inside the package, each with its digest pinned here (so a swapped file is
refused even with a matching ``config.json``):
- ``EmphysemaXAILib/model/shipped``: the default, the pattern model (trained on CIP's
  expert-labelled patches and phantoms), :data:`SHIPPED_SHA256`;
- ``EmphysemaXAILib/model/shipped_severity_v1``: the phantom-trained 2.5D severity model of issue
  6, :data:`SEVERITY_V1_SHA256`; the starting point of ``train --manifest`` (which fine-tunes its
  attention pooling) and the network of the ``own`` embedding backbone; ``--model`` selects it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..io.files import sha256

if TYPE_CHECKING:
    import torch

    from .pattern_net import PatternNet
    from .severity_net import SeverityNet

WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
#: SHA-256 of the shipped ``weights.pt`` (written when the checkpoint was trained; MODEL_CARD.md).
SHIPPED_SHA256 = "7fa852bee45ce57e2447626ff96ea6924ac41785c9269756cbaf43a8a4c0b7f6"
SEVERITY_V1_DIR = Path(__file__).resolve().parent / "shipped_severity_v1"
SEVERITY_V1_SHA256 = "833524b7e694ff7a34ff7d496763b475fde76ace72e00b379e02e89d8f431f29"


def save_model(model, config: dict, out_dir) -> str:
    """Write ``weights.pt`` and ``config.json`` (with ``weights_sha256``) into ``out_dir``;
    returns the digest."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / WEIGHTS_FILE)
    digest = sha256(out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(json.dumps({**config, "weights_sha256": digest}, indent=2) + "\n")
    return digest


def pick_device(name: str = "auto") -> torch.device:
    """The torch device: CUDA, then Apple MPS, then the CPU (``auto``), or the named device."""
    import torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def model_dir(path=None) -> Path:
    """The folder of the model to use: ``path``, else the shipped one."""
    return Path(path) if path is not None else SHIPPED_DIR


def shipped_available() -> bool:
    return (SHIPPED_DIR / WEIGHTS_FILE).is_file() and (SHIPPED_DIR / CONFIG_FILE).is_file()


def load_model(path=None, device="cpu") -> tuple[PatternNet | SeverityNet, dict]:
    """(network in eval mode on ``device``, config dict) from a model folder (default: the
    shipped model): a PatternNet when ``config["architecture"]["kind"]`` is ``pattern``, else a
    SeverityNet. Refuses a missing folder, a digest mismatch or weights that do not fit."""
    import torch

    from .severity_net import SeverityNet

    folder = model_dir(path)
    weights, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not weights.is_file() or not config_path.is_file():
        raise InputError(f"{folder} is not a severity model folder (needs {WEIGHTS_FILE} and {CONFIG_FILE}); "
                         "train one with `emphysema-xai train` or leave the model unset (no --model) "
                         "for the shipped model")
    config = json.loads(config_path.read_text())
    digest = sha256(weights)
    expected = [config.get("weights_sha256")]
    pinned = {SHIPPED_DIR: SHIPPED_SHA256, SEVERITY_V1_DIR: SEVERITY_V1_SHA256}   # read now: tests swap them
    if folder.resolve() in pinned:
        expected.append(pinned[folder.resolve()])
    for want in expected:
        if want is not None and want != digest:
            raise InputError(f"{weights} has SHA-256 {digest[:12]}..., expected {want[:12]}...: the file is corrupt "
                             "or replaced; reinstall the package or retrain the model")
    arch = config["architecture"]
    if arch.get("kind") == "pattern":
        from .pattern_net import PatternNet

        model = PatternNet(width=arch["width"], hidden=arch["hidden"], fraction_width=arch.get("fraction_width"))
    else:
        model = SeverityNet(slices=arch["slices"], width=arch["width"], hidden=arch["hidden"])
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError) as exc:
        raise InputError(f"{weights} does not fit the architecture in {config_path}: "
                         f"{str(exc).splitlines()[0]}") from exc
    config["weights_sha256"] = digest
    return model.to(device).eval(), config
