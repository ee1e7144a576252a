"""CSV files written without pandas (3D Slicer does not ship it): the text pandas would write."""
import csv
import importlib.util

import numpy as np
import pytest

from EmphysemaXAILib.analysis.calibration import calibration_from_refs
from EmphysemaXAILib.analysis.qct import measure_qct
from EmphysemaXAILib.io.csv_table import csv_rows, write_csv
from EmphysemaXAILib.volume import CTVolume

ROWS = [{"id": "a", "n": 3, "x": 0.1, "mixed": 2, "gap": 1, "flag": True, "text": 'say "hi", twice'},
        {"id": "b", "n": 4, "x": 1e-7, "mixed": 2.5, "gap": None, "flag": False, "text": None},
        {"id": "c", "n": np.int64(5), "x": np.float64(-950.25), "mixed": 1, "gap": 7, "flag": None, "text": "é"}]
COLUMNS = ["id", "n", "x", "mixed", "gap", "flag", "text", "absent"]


def small_qct(calibrated: bool):
    rng = np.random.default_rng(0)
    hu = rng.normal(-870, 40, (6, 40, 48)).round().astype(np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    labels[:, 5:35, 4:22], labels[:, 5:35, 26:44] = 1, 2
    ct = CTVolume(hu=hu, spacing=(0.7, 0.7, 2.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    calibration = calibration_from_refs(-990.0, "trachea", 40.0) if calibrated else None
    return measure_qct(ct, labels, noise_hu=12.0, calibration=calibration)


@pytest.mark.slicer_python
def test_cells_follow_pandas_column_types(tmp_path):
    header, *lines = csv_rows(ROWS, COLUMNS)
    assert header == COLUMNS
    assert [line[1] for line in lines] == ["3", "4", "5"]  # ints stay ints
    assert [line[3] for line in lines] == ["2.0", "2.5", "1.0"]  # a float makes the column float
    assert [line[4] for line in lines] == ["1.0", "", "7.0"]  # so does a missing value
    assert [line[5] for line in lines] == ["True", "False", ""]
    assert [line[7] for line in lines] == ["", "", ""]
    write_csv(tmp_path / "t.csv", ROWS, COLUMNS)
    text = (tmp_path / "t.csv").read_bytes().decode("utf-8")
    assert "\r" not in text and text.endswith("\n")
    with open(tmp_path / "t.csv", newline="", encoding="utf-8") as handle:
        back = list(csv.DictReader(handle))
    assert back[0]["text"] == 'say "hi", twice' and back[2]["text"] == "é"
    assert float(back[2]["x"]) == -950.25 and float(back[1]["x"]) == 1e-7


@pytest.mark.slicer_python
def test_qct_csv_holds_every_region_and_metric(tmp_path):
    result = small_qct(calibrated=True)
    result.write_csv(tmp_path / "qct.csv")
    with open(tmp_path / "qct.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns, expected = result.table()
    assert list(rows[0]) == columns and [r["region"] for r in rows] == [r["region"] for r in result.regions]
    assert float(rows[0]["laa950_pct"]) == result.regions[0]["laa950_pct"]
    assert rows[0]["calibration_reference"] == expected[0]["calibration_reference"] == "blood"


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="compares with pandas (main environment)")
@pytest.mark.parametrize("calibrated", [False, True])
def test_the_text_is_what_pandas_writes(tmp_path, calibrated):
    import pandas as pd

    pd.DataFrame(ROWS, columns=COLUMNS).to_csv(tmp_path / "pandas.csv", index=False)
    write_csv(tmp_path / "ours.csv", ROWS, COLUMNS)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    result = small_qct(calibrated)
    result.dataframe().to_csv(tmp_path / "qct_pandas.csv", index=False)
    result.write_csv(tmp_path / "qct.csv")
    assert (tmp_path / "qct.csv").read_bytes() == (tmp_path / "qct_pandas.csv").read_bytes()
