"""The command line: info output, demo, JSON on stdout only."""
import json

import pytest
from helpers import run_cli

from EmphysemaXAILib.phantom.sample import write_sample_series


def test_info_text_and_json(tmp_path):
    write_sample_series(tmp_path / "ct", seed=3)
    text = run_cli("info", tmp_path / "ct")
    assert text.returncode == 0
    assert "128 x 128 x 48 voxels" in text.stdout and "quality control" in text.stdout
    js = run_cli("info", tmp_path / "ct", "--json")
    info = json.loads(js.stdout)  # exactly one JSON object on stdout
    assert info["shape"] == [48, 128, 128]
    assert info["spacing"] == [2.5, 2.5, 5.0]
    assert info["series"][0]["slices"] == 48 and info["series"][0]["modality"] == "CT"
    assert info["qc"]["measures"]["noise_hu"] > 15
    assert "SYNTHETIC" not in js.stdout and "identity" not in info
    kept = json.loads(run_cli("info", tmp_path / "ct", "--json", "--keep-identity").stdout)
    assert kept["identity"]["patient_id"] == "SYNTH0001"


def test_seeds_profile_flag(tmp_path):
    from EmphysemaXAILib.io.dicom_write import write_dicom_series
    from EmphysemaXAILib.phantom.sample import make_sample_ct

    ct = make_sample_ct(metal=True)
    write_dicom_series(ct.hu, tmp_path / "ct", ct.spacing, ct.origin, ct.direction)
    default = json.loads(run_cli("info", tmp_path / "ct", "--json").stdout)
    seeds = json.loads(run_cli("info", tmp_path / "ct", "--json", "--qc-profile", "seeds").stdout)
    assert default["qc"]["errors"] == []
    assert seeds["qc"]["errors"] and seeds["qc"]["profile"] == "seeds"


def test_demo_analyzes_a_generated_phantom_and_replaces_its_folder(tmp_path):
    out = tmp_path / "demo"
    first = run_cli("demo", "--out", out, "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["qc"]["errors"] == []
    assert summary["input"]["shape"] == [200, 256, 256]
    assert summary["input"]["spacing"] == pytest.approx([1.4, 1.4, 1.4])
    assert len(list((out / "phantom" / "ct").glob("*.dcm"))) == 200
    truth = json.loads((out / "phantom" / "truth.json").read_text())
    assert truth["extent_pct"] == pytest.approx(12.0, abs=1.0)
    assert summary["qct_severity"]["class"] == truth["severity"] == "mild"
    import pandas as pd
    qct = pd.read_csv(out / "qct.csv").set_index("region")
    assert qct.loc["whole", "volume_l"] * 1000 == pytest.approx(truth["lung_volume_ml"], rel=0.05)
    assert qct.loc["whole", "laa950_pct"] == pytest.approx(truth["extent_pct"], abs=2.5)
    for name in ("lung_labels.nrrd", "laa_map.nrrd", "lungs.seg.nrrd", "scene.mrb", "report.html",
                 "phantom/preview.png"):
        assert (out / name).stat().st_size > 1000, name
    (out / "stale.txt").write_text("old run")
    again = run_cli("demo", "--out", out, "--no-scene", "--explain", "")  # the rerun: only its folder is checked
    assert again.returncode == 0 and "not a medical device" in again.stdout
    assert not (out / "stale.txt").exists() and not (out / "scene.mrb").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temporary folder left behind
