"""Fine-tuning a severity model on a manifest (`train --manifest --init --folds`), then `evaluate`
on the same manifest. In a file of its own (it used to be in test_model_training.py) so that
pytest-xdist's --dist loadfile can run it beside the rest of the model tests."""
import csv
import json

from helpers import run_cli

from EmphysemaXAILib.io.files import sha256


def test_manifest_kfold_fine_tuning(tiny_model, tmp_path):
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
    from EmphysemaXAILib.phantom.io import write_phantom

    rows = []
    for i, (extent, pattern) in enumerate([(0, "none"), (8, "mixed"), (18, "mixed"), (30, "mixed"), (0, "none"),
                                           (10, "centrilobular")]):
        phantom = generate_phantom(PhantomParams(size="small", seed=40 + i, extent_pct=extent, pattern=pattern))
        write_phantom(phantom, tmp_path / f"case{i}", fmt="nrrd")
        rows.append({"path": f"case{i}/ct.nrrd", "lung_mask": f"case{i}/labels/lungs.nrrd",
                     "label": phantom.truth["severity"], "extent_pct": "", "subject": f"p{i}"})
    with open(tmp_path / "cohort.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "tuned"
    done = run_cli("train", "--manifest", tmp_path / "cohort.csv", "--init", tiny_model, "--folds", 2,
                   "--case-epochs", 1, "--out", out)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cv"]["folds"] == 2 and metrics["cv"]["n"] == 6 and metrics["cases"] == 6
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["init_sha256"] == sha256(tiny_model / "weights.pt")
    assert config["weights_sha256"] != config["training"]["init_sha256"]   # fine-tuned end to end
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,subject\ncase0/ct.nrrd,huge,p0\n")
    refused = run_cli("train", "--manifest", bad, "--init", tiny_model, "--out", tmp_path / "t2")
    assert refused.returncode == 2 and "line 2" in refused.stderr and not (tmp_path / "t2").exists()
    evaluated = run_cli("evaluate", "--model", out, "--manifest", tmp_path / "cohort.csv", "--out", tmp_path / "ev")
    assert evaluated.returncode == 0, evaluated.stderr
    assert len(list(csv.DictReader(open(tmp_path / "ev" / "predictions.csv")))) == 6
