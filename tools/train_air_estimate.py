"""Train the air estimate ``patterns`` uses without ``--air-hu`` and write
``EmphysemaXAI/EmphysemaXAILib/model/shipped/air_estimate.json`` (``model/air_estimate.py``).

Usage (from the project root, about 4 minutes):
    .venv/bin/python tools/train_air_estimate.py [--mat ../shared/data/cip-copdgene/EmphysemaPatches.mat]

Trained on simulated sets of every CIP patch (the held-out figures in MODEL_CARD.md come from
``bench/bench_air_estimate.py``, which fits the same recipe on the training folds only).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "EmphysemaXAI"))

from EmphysemaXAILib.model import air_estimate  # noqa: E402
from EmphysemaXAILib.model.cip_patches import load_cip_patches  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mat", type=Path,
                        default=ROOT.parent / "shared" / "data" / "cip-copdgene" / "EmphysemaPatches.mat")
    parser.add_argument("--sets", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=air_estimate.ESTIMATE_FILE)
    args = parser.parse_args()
    cip = load_cip_patches(args.mat)
    fitted = air_estimate.fit(cip.images, cip.labels, np.arange(len(cip)), args.sets, seed=0)
    args.out.write_text(json.dumps(fitted, separators=(",", ":")) + "\n")
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
