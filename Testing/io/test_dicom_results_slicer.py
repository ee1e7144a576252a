"""``analyze --dicom-out`` with 3D Slicer 5.10's packages (pydicom 2.4.4, numpy 2.0.2) and the
highdicom the module's installer resolves there (0.22.0: requirements/slicer-module-installs.txt),
QCT only (no torch in Slicer until the user installs it): the SEG references the source series,
every SR value is summary.json's, dciodvfy finds no error. In the main environment the same test
runs with highdicom 0.28 and pydicom 3."""
import json

import pytest

hd = pytest.importorskip("highdicom", reason="highdicom is not installed (make test-slicer-python installs 0.22.0)")
import pydicom  # noqa: E402
from dicom_validate import dciodvfy_findings, sr_groups  # noqa: E402
from helpers import run_cli  # noqa: E402

from EmphysemaXAILib.io.dicom_sr import QCT_MEASURES, UNITS  # noqa: E402
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom  # noqa: E402
from EmphysemaXAILib.phantom.io import write_phantom  # noqa: E402

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)


def test_qct_only_dicom_results_with_slicers_packages(tmp_path):
    phantom = generate_phantom(PhantomParams(size="small", seed=8, extent_pct=12, pattern="centrilobular"))
    series = write_phantom(phantom, tmp_path / "ph", fmt="dicom") / "ct"
    out = tmp_path / "out"
    done = run_cli("analyze", series, "--out", out, "--dicom-out", "--engine", "classical", "--no-model",
                   "--no-scene", "--no-report")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dicom"]["referenced"] == "source"
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    source_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.iterdir()}
    referenced = {item.ReferencedSOPInstanceUID for series_item in seg.ReferencedSeriesSequence
                  for item in series_item.ReferencedInstanceSequence}
    assert referenced == source_uids
    assert [d.SegmentLabel for d in seg.SegmentSequence][:3] == ["Lungs", "Right lung", "Left lung"]
    groups = sr_groups(out / "dicom" / "sr.dcm")
    checked = 0
    for row in summary["qct"]["regions"]:
        for key, (concept, unit) in QCT_MEASURES.items():
            if row.get(key) is not None:
                assert groups[f"qct {row['region']}"]["num"][concept[0]] == (row[key], UNITS[unit][0])
                checked += 1
    assert checked >= 12 * 4
    assert not any(name.startswith("model ") for name in groups)  # no model ran: no model findings
    for name in ("seg.dcm", "sr.dcm"):
        found = dciodvfy_findings(out / "dicom" / name)
        assert found["errors"] == [], found["output"]
