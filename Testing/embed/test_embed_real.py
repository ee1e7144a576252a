"""The embedding pipeline on real chest CT (../shared/data; skipped with the reason when absent)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import run_cli, shared


def test_embed_real_cases_copdgene_emphysema_vs_lung_pet_ct(tmp_path):
    """COPDGene ct-64 (visible emphysema, CIP's whole-lung mask) and Lung-PET-CT-Dx A0001 (no
    emphysema, the classical engine): one row each, QCT columns equal to the project's
    densitometry, the emphysema case lower in density."""
    from EmphysemaXAILib.analysis.qct import measure_qct
    from EmphysemaXAILib.io.read import read_ct
    from EmphysemaXAILib.segmentation import load_mask

    copd, mask = shared("cip-copdgene", "ct-64.nrrd"), shared("cip-copdgene", "wholeLung-64.nrrd")
    lpc = shared("lung-pet-ct-dx-A0001")
    out = tmp_path / "emb.csv"
    # one mask per input: the DICOM case gets its own segmentation through a second call below
    result = run_cli("embed", copd, "--lung-mask", mask, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    copd_row = pd.read_csv(out, dtype={"id": str}).iloc[0]
    assert copd_row["id"] == "ct-64"
    ct = read_ct(copd)
    labels = load_mask(mask, ct)
    whole = measure_qct(ct, labels).region("whole")
    assert copd_row["qct_laa950_pct"] == pytest.approx(whole["laa950_pct"], abs=1e-4)   # CSV keeps float32
    assert copd_row["qct_volume_l"] == pytest.approx(whole["volume_l"], rel=1e-6)
    features = copd_row[[c for c in copd_row.index if c.startswith(("upper_", "middle_", "lower_"))]].to_numpy(float)
    assert features.shape == (3 * 1280,) and np.isfinite(features).all()
    # the three zone embeddings of a real chest differ from each other
    zones = features.reshape(3, 1280)
    assert np.abs(zones[0] - zones[2]).mean() > 1e-3

    out2 = tmp_path / "lpc.parquet"
    result = run_cli("embed", lpc, "--engine", "classical", "--out", out2)
    assert result.returncode == 0, result.stderr
    lpc_row = pd.read_parquet(out2).iloc[0]
    assert lpc_row["id"] == "lung-pet-ct-dx-A0001"
    assert copd_row["qct_laa950_pct"] > lpc_row["qct_laa950_pct"] + 3
    assert copd_row["qct_perc15_hu"] < lpc_row["qct_perc15_hu"]


def test_embed_images_route_on_lidc_dicom_slices(tmp_path):
    """Two single-slice LIDC DICOM files through the images route: HU by rescale slope and
    intercept, one 1280-d row per slice, ids = paths relative to the folder."""
    import pydicom

    folder = shared("lidc-two-slices")
    out = tmp_path / "slices.csv"
    result = run_cli("embed", "--images", folder, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 2
    table = pd.read_csv(out, dtype={"id": str})
    assert sorted(table["id"]) == ["0.dcm", "1.dcm"]
    for _, row in table.iterrows():
        ds = pydicom.dcmread(folder / row["id"])
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert row["qct_laa950_pct"] == pytest.approx(100.0 * (hu <= -950).mean(), abs=1e-4)
    features = table[[c for c in table.columns if c.startswith("f_")]].to_numpy(float)
    assert features.shape == (2, 1280) and np.isfinite(features).all()
    # the two files hold the same pixels (lungmask's test data): same input, same embedding
    same = np.array_equal(pydicom.dcmread(folder / "0.dcm").pixel_array, pydicom.dcmread(folder / "1.dcm").pixel_array)
    assert np.array_equal(features[0], features[1]) == same
