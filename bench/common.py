"""Helpers the benchmark scripts share (run them from the project root: `python bench/NAME.py`)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmRSS``, ``VmHWM`` ...), in MB;
    NaN when absent."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def timed(fn):
    """(fn(), seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def lungmask_seconds(ct, slices: int = 0) -> tuple:
    """Seconds lungmask's R231 U-Net (its real architecture and inference code, generated random
    weights: the same compute as the published ones) takes on ``ct``'s first ``slices`` slices
    (0: all) -> (measured seconds, slices timed, seconds extrapolated to the whole volume)."""
    import torch
    from lungmask.resunet import UNet

    from EmphysemaXAILib.segmentation import segment_lungs
    from EmphysemaXAILib.volume import CTVolume

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        model = UNet(n_classes=3, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)
        weights = Path(folder) / "r231_generated.pth"
        torch.save(model.state_dict(), weights)
        n = slices or ct.shape[0]
        part = CTVolume(hu=ct.hu[:n], spacing=ct.spacing, origin=ct.origin, direction=ct.direction)
        _, seconds = timed(lambda: segment_lungs(part, engine="lungmask", lungmask_weights=weights))
    return seconds, n, seconds * ct.shape[0] / n


def full_phantom():
    """The full-size (512 x 512 x 400) low-dose phantom with 15 % mixed emphysema the benchmarks
    share; prints the volume size and torch's thread count."""
    import torch

    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

    phantom = generate_phantom(PhantomParams(size="full", seed=7, extent_pct=15, pattern="mixed", dose="low"))
    print(f"volume {'x'.join(map(str, phantom.ct.shape[::-1]))} voxels, torch threads {torch.get_num_threads()}")
    return phantom


CIP_PATCHES = Path(__file__).resolve().parents[2] / "shared" / "data" / "cip-copdgene" / "EmphysemaPatches.mat"


def add_held_out_arguments(parser) -> None:
    """``--model`` (a pattern model trained with ``train-patterns --holdout-fold``), ``--mat``
    (CIP's patches) and ``--json`` (write the figures there too)."""
    parser.add_argument("--model", type=Path, required=True, help="a model folder from train-patterns --holdout-fold")
    parser.add_argument("--mat", type=Path, default=CIP_PATCHES)
    parser.add_argument("--json", type=Path, help="write the figures here too")


def held_out(args) -> tuple:
    """(PatternPredictor on the CPU, CIP's PatchSet, indices (n,) of the model's held-out patches,
    the held-out fold); exits with one line when the model saw every patch."""
    import json

    import numpy as np

    from EmphysemaXAILib.model.cip_patches import load_cip_patches
    from EmphysemaXAILib.model.pattern_infer import PatternPredictor

    metrics = json.loads((args.model / "metrics.json").read_text())
    if "holdout" not in metrics:
        raise SystemExit(f"{args.model}: not trained with --holdout-fold: its CIP figures would be on seen patches")
    return (PatternPredictor(args.model, device="cpu"), load_cip_patches(args.mat),
            np.array(metrics["holdout"]["test_index"]), metrics["holdout"]["fold"])
