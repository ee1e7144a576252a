"""Faithfulness figures of attribution maps (explain.faithfulness) and the `explain-eval` command,
with the tiny model. In a file of its own (they used to be in test_explain.py) so that
pytest-xdist's --dist loadfile can run them beside the analyze-with-explanations tests."""
import json

import numpy as np
import pytest
import torch
from helpers import run_cli

from EmphysemaXAILib.phantom import PhantomParams, generate_phantom


def test_faithfulness_figures_on_a_phantom(tiny_model):
    from EmphysemaXAILib.explain.faithfulness import FRACTIONS, case_faithfulness, lung_ssim, randomized
    from EmphysemaXAILib.model.severity_infer import SeverityPredictor

    phantom = generate_phantom(PhantomParams(size="small", seed=22, extent_pct=25, pattern="bullous"))
    predictor = SeverityPredictor(tiny_model, device="cpu")
    severity = predictor.predict(phantom.ct, phantom.labels["lungs"], extra={"lesion": phantom.labels["emphysema"]})
    figures = case_faithfulness(predictor, severity, severity.grid.extra["lesion"], ["gradcam"], top_tiles=16)
    g = figures["gradcam"]
    for key in ("pointing_game", "dice_topk", "deletion_auc", "insertion_auc", "deletion_auc_random",
                "deletion_auc_laa", "randomization_ssim", "randomization_ssim_lung"):
        assert g[key] is not None and np.isfinite(g[key]), key
    assert g["pointing_game"] in (0.0, 1.0) and 0 <= g["dice_topk"] <= 1 and -1 <= g["randomization_ssim"] <= 1
    # the rank correlation is undefined (None) only when a map is constant, e.g. an empty random map
    if not g["randomization_map_empty"]:
        assert g["randomization_spearman"] is not None
    assert FRACTIONS[0] == 0 and FRACTIONS[-1] == 1
    rng = np.random.default_rng(0)
    lung = np.ones((8, 16, 16), bool)
    a = rng.random(lung.shape)
    assert lung_ssim(a, a, lung) == pytest.approx(1.0) and lung_ssim(a, rng.random(lung.shape), lung) < 0.3
    # a sparse map against an empty one: alike over the shared zero background, not where the map is
    sparse = np.zeros((16, 32, 32))
    sparse[6:10, 10:16, 10:16] = rng.random((4, 6, 6)) + 0.5
    assert lung_ssim(sparse, np.zeros(sparse.shape), np.ones(sparse.shape, bool)) > 0.5
    assert lung_ssim(sparse, np.zeros(sparse.shape), sparse > 0) < 0.3
    clone = randomized(predictor.model, seed=1)
    assert not torch.equal(clone.encoder.features[0][0].weight, predictor.model.encoder.features[0][0].weight)


def test_explain_eval_command(tiny_model, tmp_path):
    out = tmp_path / "ee"
    done = run_cli("explain-eval", "--model", tiny_model, "--phantoms", 1, "--phantom-size", "small",
                   "--methods", "gradcam,attention", "--top-tiles", 8, "--out", out)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for method in ("gradcam", "attention"):
        for key in ("pointing_game", "dice_topk", "deletion_auc", "insertion_auc", "deletion_auc_random",
                    "randomization_ssim"):
            assert key in metrics[method]
        assert set(metrics[method]["goals_met"]) == {"pointing_game", "dice_topk", "deletion_vs_random",
                                                     "randomization_ssim"}
    assert (out / "cases.csv").is_file() and "gradcam" in done.stdout
