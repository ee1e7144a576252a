"""Benchmark: what the pattern map marks on normal lung, the demo phantom and subtype phantoms.

Usage (from the project root):
    .venv/bin/python bench/bench_pattern_map.py [--model DIR ...] [--real lidc,cip_crop,a0001] [--both-rules]
        [--json OUT]
(per model 10-30 minutes on 2 cores shared with other jobs, A0001 the largest part; the shipped
model by default).

Items and figures, per model:
- the real series of ``../shared/data`` (LIDC's two slices: no emphysema; the CIP crop of COPDGene
  16021S; Lung-PET-CT-Dx A0001) and the demo phantom (``demo_params(0)``, what ``emphysema-xai demo``
  analyses), through ``analyze_case`` with the defaults (segmentation, quality control, air / blood
  calibration, the model): the extent, the map's emphysema share and the share of every pattern
  (% of lung); on the demo the true extent beside them;
- a lesion-free medium phantom (standard dose, seed 5) and subtype phantoms (centrilobular,
  paraseptal, panlobular; medium, 15 % target extent, standard dose, seed 3), run through the
  model with their true lung masks: the % of lung per pattern, the extent, and the Dice of each
  broad pattern's map region against the phantom's true lesions of that subtype (centrilobular =
  the three grades; the phantom's bullous lesions count for no pattern).
``--both-rules`` also reports every figure with the other label rule of ``pattern_infer`` (``argmax``:
the rule of models before issue 25; ``extent``: the new one), so the effect of the training and
that of the label rule can be told apart.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "EmphysemaXAI"))

from EmphysemaXAILib.analysis.patterns import PATTERN_GROUPS, PATTERNS  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
REAL = {"lidc": DATA / "lidc-two-slices", "cip_crop": DATA / "cip-copdgene" / "crop_ct_2slices.nrrd",
        "a0001": DATA / "lung-pet-ct-dx-A0001"}
#: phantom subtype code (phantom.params.SUBTYPE_CODES) -> broad pattern
PHANTOM_SUBTYPES = {1: "centrilobular", 2: "panlobular", 3: "paraseptal"}


def shares(summary: dict) -> dict:
    """Extent, the map's emphysema share and the % of lung per pattern, rounded."""
    patterns = summary["patterns"]
    whole = patterns["share_by_region"]["whole"]
    return {"extent_pct": round(summary["extent_pct"], 2),
            "map_emphysema_pct": round(patterns["emphysema_share_pct"], 2),
            **{p: round(whole[p], 2) for p in PATTERNS}}


def dice_by_pattern(pattern_labels: np.ndarray, truth: np.ndarray, lung: np.ndarray) -> dict:
    """Dice of each broad pattern's map region (codes = PATTERNS index + 1) against the phantom's
    lesions of that subtype, within the lung (None when both are empty)."""
    out = {}
    for code, name in PHANTOM_SUBTYPES.items():
        predicted = np.isin(pattern_labels, [i + 1 for i in PATTERN_GROUPS[name]]) & lung
        true = (truth == code) & lung
        total = int(predicted.sum() + true.sum())
        out[name] = round(2.0 * int((predicted & true).sum()) / total, 3) if total else None
    return out


def run_model(model_dir, real: list, both: bool) -> dict:
    from EmphysemaXAILib.analysis.calibration import calibration_from_qc
    from EmphysemaXAILib.model.pattern_infer import MAP_RULES, PatternPredictor
    from EmphysemaXAILib.options import AnalysisOptions
    from EmphysemaXAILib.phantom import PhantomParams, demo_params, generate_phantom
    from EmphysemaXAILib.pipeline import analyze_case

    predictor = PatternPredictor(model_dir, device="cpu")
    rules = [predictor.map_rule] + ([r for r in MAP_RULES if r != predictor.map_rule] if both else [])
    out = {"model": str(model_dir or "shipped"), "map_rule": predictor.map_rule}
    options = AnalysisOptions(model=str(predictor.path), explain=())
    items = {name: path for name, path in REAL.items() if name in real and path.exists()}
    demo = generate_phantom(demo_params(0))
    items["demo_phantom"] = demo.ct
    for name, source in items.items():
        result = analyze_case(source, options)
        out[name] = {"analyze": shares(result.severity.summary)}
        for rule in rules[1:]:
            calibration = calibration_from_qc(result.qc.measures, [])
            predictor.map_rule = rule
            out[name][rule] = shares(predictor.predict(result.ct, result.segmentation.labels,
                                                       calibration=calibration).summary)
            predictor.map_rule = rules[0]
    out["demo_phantom"]["true_extent_pct"] = demo.truth["extent_pct"]
    phantoms = {"lesion_free": PhantomParams(size="medium", seed=5)}
    for subtype in ("centrilobular", "paraseptal", "panlobular"):
        phantoms[subtype] = PhantomParams(size="medium", seed=3, pattern=subtype, extent_pct=15.0)
    for name, params in phantoms.items():
        phantom = generate_phantom(params)
        lung = phantom.labels["lungs"] > 0
        row = {"true_extent_pct": phantom.truth["extent_pct"], "true_by_subtype": phantom.truth["subtype_extent_pct"]}
        for rule in rules:
            predictor.map_rule = rule
            result = predictor.predict(phantom.ct, phantom.labels["lungs"])
            row[rule] = {**shares(result.summary),
                         "dice": dice_by_pattern(result.pattern_labels, phantom.labels["emphysema"], lung)}
        predictor.map_rule = rules[0]
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", default=[None], help="pattern model folders (default: the shipped one)")
    parser.add_argument("--real", default=",".join(REAL), help="real series to run ('' none)")
    parser.add_argument("--both-rules", action="store_true", help="also the other label rule")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    results = [run_model(m, [r for r in args.real.split(",") if r], args.both_rules) for m in args.model]
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
