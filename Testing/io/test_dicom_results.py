"""DICOM results (``analyze --dicom-out``): SEG + SR read back with highdicom and pydicom against the
NRRD files and summary.json, the derived-series rule, identity, deterministic UIDs, dciodvfy.

Two small phantoms: as a DICOM series (analysed with an untrained pattern model, so the SEG has
pattern segments and the SR the model's findings) and as NRRD (``analyze --dicom-out`` on the
command line, no model)."""
import json

import numpy as np
import pytest

hd = pytest.importorskip("highdicom")
pytest.importorskip("torch")
import pydicom  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from dicom_validate import dciodvfy_findings, sr_groups  # noqa: E402
from helpers import run_cli, save_untrained_pattern_model  # noqa: E402

from EmphysemaXAILib.analysis.patterns import PATTERN_COLORS, PATTERNS  # noqa: E402
from EmphysemaXAILib.app.case_files import write_case  # noqa: E402
from EmphysemaXAILib.io.dicom_seg import PATTERN_SEGMENTS  # noqa: E402
from EmphysemaXAILib.io.dicom_seg_read import read_seg_segments  # noqa: E402
from EmphysemaXAILib.io.dicom_sr import QCT_MEASURES, UNITS, pattern_code  # noqa: E402
from EmphysemaXAILib.options import AnalysisOptions  # noqa: E402
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom  # noqa: E402
from EmphysemaXAILib.phantom.io import write_phantom  # noqa: E402
from EmphysemaXAILib.pipeline import analyze_case  # noqa: E402
from EmphysemaXAILib.volume import CTVolume  # noqa: E402

SOURCE_NAME, SOURCE_ID = "SYNTHETIC^PHANTOM", "SYNTH0001"  # what write_dicom_series puts in the phantom


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    ph = generate_phantom(PhantomParams(size="small", seed=21, extent_pct=15, pattern="mixed"))
    root = tmp_path_factory.mktemp("ph")
    return {"dicom": write_phantom(ph, root / "d", fmt="dicom") / "ct",
            "nrrd": write_phantom(ph, root / "n", fmt="nrrd") / "ct.nrrd"}


@pytest.fixture(scope="module")
def dicom_result(phantom, tmp_path_factory):
    """The DICOM phantom analysed with an untrained pattern model (the machinery, not the figures)."""
    model = save_untrained_pattern_model(tmp_path_factory.mktemp("models") / "pattern")
    return analyze_case(phantom["dicom"], AnalysisOptions(engine="classical", model=str(model)))


@pytest.fixture(scope="module")
def dicom_case(dicom_result, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "dicom_case"
    write_case(dicom_result, out, report=False, scene=False, dicom=True)
    return out


@pytest.fixture(scope="module")
def nrrd_case(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "nrrd_case"
    done = run_cli("analyze", phantom["nrrd"], "--out", out, "--no-scene", "--no-report", "--model", "none",
                   "--engine", "classical", "--dicom-out")
    assert done.returncode == 0, done.stderr
    return out


def nrrd(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def segments_on_grid(case) -> dict:
    """label -> SegSegment, the SEG read back onto the grid of lung_labels.nrrd."""
    image = sitk.ReadImage(str(case / "lung_labels.nrrd"))
    segments = read_seg_segments(case / "dicom" / "seg.dcm", image.GetSize()[::-1], image.GetSpacing(),
                                 image.GetOrigin(), image.GetDirection())
    return {s.label: s for s in segments}


def check_seg_against_files(case, referenced_files) -> None:
    """Segments, codes and masks of seg.dcm against the NRRD files; references and frame of
    reference against the CT files the SEG must reference."""
    seg = hd.seg.segread(case / "dicom" / "seg.dcm")
    cts = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in referenced_files),
                 key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert seg.FrameOfReferenceUID == cts[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == cts[0].StudyInstanceUID
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == cts[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} == {ds.SOPInstanceUID for ds in cts}
    segments = segments_on_grid(case)
    labels = nrrd(case / "lung_labels.nrrd")
    assert np.array_equal(segments["Lungs"].mask, labels > 0)
    assert np.array_equal(segments["Right lung"].mask, labels == 1)
    assert np.array_equal(segments["Left lung"].mask, labels == 2)
    assert np.array_equal(segments["Airways"].mask, nrrd(case / "airways.nrrd") > 0)
    assert segments["Right lung"].type == ("39607008", "SCT", "Lung")
    assert segments["Right lung"].modifier == ("24028007", "SCT", "Right")  # the MRML segmentation's codes
    assert segments["Left lung"].modifier == ("7771000", "SCT", "Left")
    assert segments["Airways"].type == ("89187006", "SCT", "Airway structure")
    assert segments["Right lung"].color == pytest.approx((0.50, 0.68, 0.95), abs=0.01)


def test_dicom_input_seg_references_the_source_series(dicom_case, phantom):
    assert not (dicom_case / "dicom" / "ct").exists()
    check_seg_against_files(dicom_case, sorted(phantom["dicom"].glob("*.dcm")))
    summary = json.loads((dicom_case / "summary.json").read_text())
    assert summary["dicom"]["referenced"] == "source" and summary["dicom"]["seg"] == "dicom/seg.dcm"


def test_pattern_segments_equal_the_pattern_map(dicom_case):
    segments = segments_on_grid(dicom_case)
    codes = nrrd(dicom_case / "pattern_map.nrrd")
    present = [(value, name.replace(" ", "_")) for value, name, _ in PATTERN_COLORS[1:] if (codes == value).any()]
    assert present
    assert len([s for s in segments.values() if s.category[0] in ("49755003", "85756007")]) == len(present)
    for value, name in present:
        label, category, code, modifier = PATTERN_SEGMENTS[name]
        segment = segments[label]
        assert (segment.category, segment.type, segment.modifier) == (category, code, modifier)
        assert np.array_equal(segment.mask, codes == value), name
    assert PATTERN_SEGMENTS["centrilobular_severe"][2:] == (("68328006", "SCT", "Centriacinar emphysema"),
                                                          ("24484000", "SCT", "Severe"))
    seg = hd.seg.segread(dicom_case / "dicom" / "seg.dcm")
    model = json.loads((dicom_case / "summary.json").read_text())["severity"]["model"]
    pattern = next(d for d in seg.SegmentSequence
                   if d.SegmentedPropertyCategoryCodeSequence[0].CodeValue in ("49755003", "85756007"))
    assert pattern.SegmentAlgorithmName == model["name"]
    assert pattern.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == model["sha256"]


def test_nrrd_input_gets_a_derived_ct_series(nrrd_case, phantom):
    files = sorted((nrrd_case / "dicom" / "ct").glob("*.dcm"))
    hu = nrrd(phantom["nrrd"])
    assert len(files) == hu.shape[0]
    check_seg_against_files(nrrd_case, files)
    from EmphysemaXAILib.io.read import read_ct

    derived = read_ct(nrrd_case / "dicom" / "ct")  # the derived CT holds the analysed HU on the input grid
    assert np.array_equal(derived.hu, hu)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert list(first.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert json.loads((nrrd_case / "summary.json").read_text())["dicom"]["referenced"] == "derived"


def test_sr_values_equal_summary_json(dicom_case):
    summary = json.loads((dicom_case / "summary.json").read_text())
    groups = sr_groups(dicom_case / "dicom" / "sr.dcm")
    seg = hd.seg.segread(dicom_case / "dicom" / "seg.dcm")
    numbers = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    checked = 0
    for row in summary["qct"]["regions"]:
        group = groups[f"qct {row['region']}"]
        for key, (concept, unit) in QCT_MEASURES.items():
            if row.get(key) is None:
                assert concept[0] not in group["num"]
                continue
            assert group["num"][concept[0]] == (row[key], UNITS[unit][0]), (row["region"], key)
            checked += 1
        segment = {"whole": "Lungs", "right": "Right lung", "left": "Left lung"}.get(row["region"])
        assert group["segment"] == (numbers[segment] if segment else None)
    assert checked >= 12 * 6
    assert groups["qct whole"]["code"]["246112005"] == {"none": "260413007", "mild": "255604002",
                                                        "moderate": "6736007", "severe": "24484000"}[
        summary["qct_severity"]["class"]]
    model = summary["severity"]
    whole = groups["model whole"]
    assert whole["algorithm"] == [model["model"]["name"], model["model"]["sha256"]]
    assert whole["num"]["EXAI010"] == (model["extent_pct"], "%")
    for pattern in PATTERNS:
        share = model["patterns"]["share_by_region"]["whole"][pattern]
        assert whole["num"][pattern_code(pattern)[0]] == (share, "%")
    assert "246112005" in whole["code"]


def test_identity_empty_by_default_and_copied_with_keep_identity(dicom_result, dicom_case, nrrd_case, tmp_path):
    written = [p for case in (dicom_case, nrrd_case) for p in (case / "dicom").rglob("*.dcm")]
    for path in written:
        data = path.read_bytes()
        assert SOURCE_NAME.encode() not in data and SOURCE_ID.encode() not in data and b"19500101" not in data
    kept = tmp_path / "kept"
    write_case(dicom_result, kept, report=False, scene=False, dicom=True, keep_identity=True)
    source = pydicom.dcmread(next(iter(sorted(dicom_result.ct.series[0].files))), stop_before_pixels=True)
    default_seg = pydicom.dcmread(dicom_case / "dicom" / "seg.dcm", stop_before_pixels=True)
    for name in ("seg.dcm", "sr.dcm"):
        ds = pydicom.dcmread(kept / "dicom" / name, stop_before_pixels=True)
        assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate) == (SOURCE_NAME, SOURCE_ID, "19500101")
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        plain = pydicom.dcmread(dicom_case / "dicom" / name, stop_before_pixels=True)
        assert (str(plain.PatientName), plain.PatientID, plain.PatientSex) == ("", "", "")
        assert plain.StudyInstanceUID == source.StudyInstanceUID
    assert pydicom.dcmread(kept / "dicom" / "seg.dcm").SOPInstanceUID != default_seg.SOPInstanceUID


def test_same_result_same_uids(dicom_result, dicom_case, tmp_path):
    again = tmp_path / "again"
    write_case(dicom_result, again, report=False, scene=False, dicom=True)
    for name in ("seg.dcm", "sr.dcm"):
        first, second = (pydicom.dcmread(c / "dicom" / name, stop_before_pixels=True) for c in (dicom_case, again))
        assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (second.SOPInstanceUID, second.SeriesInstanceUID)


def test_dciodvfy_finds_no_error(dicom_case, nrrd_case):
    for path in (dicom_case / "dicom" / "seg.dcm", dicom_case / "dicom" / "sr.dcm", nrrd_case / "dicom" / "seg.dcm",
                 nrrd_case / "dicom" / "sr.dcm", sorted((nrrd_case / "dicom" / "ct").glob("*.dcm"))[5]):
        findings = dciodvfy_findings(path)
        assert findings["errors"] == [], (path.name, findings["errors"])


def test_excluded_case_writes_no_dicom(tmp_path):
    ct = CTVolume(hu=np.zeros((12, 48, 48), np.int16), spacing=(2.0, 2.0, 2.5), origin=(0, 0, 0),
                  direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), modality="CT")
    result = analyze_case(ct, AnalysisOptions(engine="classical", model="none"))
    assert result.excluded
    write_case(result, tmp_path / "case", report=False, scene=False, dicom=True)
    assert not (tmp_path / "case" / "dicom").exists()
    note = json.loads((tmp_path / "case" / "summary.json").read_text())["dicom"]
    assert note["written"] is False and "quality control" in note["reason"]


def test_batch_passes_dicom_out_to_every_case(tmp_path):
    """``batch --dicom-out`` reaches write_case: an excluded case's summary.json says why it has no
    dicom/ (a no-lung volume: QC stops it at once, so the test stays fast)."""
    from EmphysemaXAILib.app.batch import run_batch

    image = sitk.GetImageFromArray(np.zeros((12, 48, 48), np.int16))
    image.SetSpacing((2.0, 2.0, 2.5))
    (tmp_path / "root").mkdir()
    sitk.WriteImage(image, str(tmp_path / "root" / "water.nrrd"))
    rows = run_batch(tmp_path / "root", tmp_path / "out", AnalysisOptions(engine="classical", model="none"),
                     report=False, scene=False, progress=False, dicom=True)
    assert [row["status"] for row in rows] == ["excluded"]
    summary = json.loads(next((tmp_path / "out" / "cases").glob("*/summary.json")).read_text())
    assert summary["dicom"]["written"] is False


def test_real_dicom_series_is_referenced_and_valid(tmp_path):
    """ct-64Dicom (CIP's COPDGene sample, 79 x 64 x 64): QCT only (no model), SEG + SR on the source
    series, masks equal the NRRD outputs, no identity of the source, no dciodvfy error."""
    from helpers import shared

    folder = shared("cip-copdgene", "ct-64Dicom")
    out = tmp_path / "ct64"
    done = run_cli("analyze", folder, "--out", out, "--no-scene", "--no-report", "--model", "none", "--dicom-out")
    assert done.returncode == 0, done.stderr
    files = sorted(p for p in folder.iterdir() if p.is_file())
    check_seg_against_files(out, files)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    for name in ("seg.dcm", "sr.dcm"):
        ds = pydicom.dcmread(out / "dicom" / name, stop_before_pixels=True)
        assert (str(ds.PatientName), ds.PatientID) == ("", "") and ds.StudyInstanceUID == source.StudyInstanceUID
        assert dciodvfy_findings(out / "dicom" / name)["errors"] == []

