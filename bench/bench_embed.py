"""Benchmark: the embedding step of one case on a full-size case (512 x 512 x 400,
0.7 x 0.7 x 1 mm): three zone patches (9 axial slices) -> backbone -> the table row (with the
whole-lung QCT marker columns).

Usage (from the project root):
    .venv/bin/python bench/bench_embed.py [--repeats 3]
        [--backbones efficientnet-lite0,efficientnet-lite0:resize,resnet152,own]
        [--preview bench/out/embed_zones.png]

Reading and segmentation are excluded: the phantom is generated (not timed) and its truth lung
labels are used. Each backbone is loaded (timed apart), warmed up with one row, then timed over
``--repeats`` rows; ``name:mode`` picks an ImageNet backbone's input mode (default ``lung``:
own pixels no finer than 1 mm, lung-pooled; ``resize``: 224 x 224). ResNet-152 runs with random
weights written to a temporary file (the same compute as the published weights, which are not on
this machine). torch uses 2 threads.
Goal: <= 2 s per case on 2 CPU cores with EfficientNet-Lite0.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import full_phantom, timed  # noqa: E402


def random_resnet152(folder: Path) -> Path:
    import torch
    from torchvision.models import resnet152

    torch.manual_seed(0)
    path = folder / "resnet152_random.pth"
    torch.save(resnet152(weights=None).state_dict(), path)
    return path


def main() -> None:
    import numpy as np
    import torch

    from EmphysemaXAILib.embed import case_row, load_backbone, qct_markers, save_zone_preview, zone_patches

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", default="efficientnet-lite0,efficientnet-lite0:resize,resnet152,own")
    parser.add_argument("--preview", help="also write the zone preview PNG here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    phantom, seconds = timed(full_phantom)
    ct, labels = phantom.ct, phantom.labels["lungs"]
    print(f"phantom generated in {seconds:.1f} s (not timed below)")
    patches, zone_s = timed(lambda: zone_patches(ct, labels))
    print(f"zone patches: slices {patches.slices.tolist()}, sizes {[p.shape[1:] for p in patches.images]}, "
          f"{zone_s:.3f} s")
    _, qct_s = timed(lambda: qct_markers(ct.hu[labels > 0], float(np.prod(ct.spacing))))
    print(f"whole-lung QCT markers: {qct_s:.3f} s")
    if args.preview:
        save_zone_preview(patches, args.preview, "full-size phantom, 15 % mixed emphysema")
        print(f"preview: {args.preview}")
    print(f"{'backbone':>26} {'dim':>5} {'load s':>7} {'warm-up s':>10} {'network s':>10} {'row s (median)':>15} "
          f"{'row s (max)':>12}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.backbones.split(","):
            base, _, mode = name.partition(":")
            weights = random_resnet152(Path(folder)) if base == "resnet152" else None
            backbone, load_s = timed(lambda base=base, weights=weights, mode=mode:
                                     load_backbone(base, weights=weights, mode=mode or "lung"))
            _, warm_s = timed(lambda backbone=backbone: case_row(ct, labels, backbone, "bench"))
            network = [timed(lambda backbone=backbone: backbone.embed_zones(patches))[1] for _ in range(args.repeats)]
            rows = [timed(lambda backbone=backbone: case_row(ct, labels, backbone, "bench"))[1]
                    for _ in range(args.repeats)]
            print(f"{name:>26} {backbone.dim:5d} {load_s:7.2f} {warm_s:10.2f} {statistics.median(network):10.3f} "
                  f"{statistics.median(rows):15.3f} {max(rows):12.3f}")
    print("goal: row s <= 2 s per case on 2 CPU cores (efficientnet-lite0); reading and segmentation excluded")


if __name__ == "__main__":
    main()
