"""A DICOM SEG loaded into the MRML scene (``mrml.dicom_results.load_dicom_seg``) on the grid of
the CT it references, headless on slicer-core: segment names, colours, terminology and masks."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the headless extra) is not installed")
pytest.importorskip("highdicom")

import pydicom  # noqa: E402
from helpers import ramp_volume  # noqa: E402

from EmphysemaXAILib.errors import InputError  # noqa: E402
from EmphysemaXAILib.io.dicom_seg import build_segmentation, segment_specs  # noqa: E402
from EmphysemaXAILib.io.dicom_write import write_dicom_series  # noqa: E402
from EmphysemaXAILib.io.pydicom_compat import save_dicom  # noqa: E402
from EmphysemaXAILib.io.read import read_ct  # noqa: E402
from EmphysemaXAILib.mrml.app import bootstrap  # noqa: E402
from EmphysemaXAILib.mrml.dicom_results import load_dicom_seg  # noqa: E402
from EmphysemaXAILib.mrml.volumes import volume_node_from_ct  # noqa: E402

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)


@pytest.fixture(scope="module")
def seg_case(tmp_path_factory):
    """A 12 x 32 x 40 CT series (anisotropic voxels, off-centre origin) and a SEG of blocks on it
    (right / left lung, airways; an empty slice at each end, so frames are omitted)."""
    root = tmp_path_factory.mktemp("segload")
    hu = ramp_volume()
    paths = write_dicom_series(hu, root / "ct", spacing=(0.8, 0.7, 2.5), origin=(-12.0, 30.0, -100.0), seed=5)
    labels = np.zeros(hu.shape, np.uint8)
    labels[2:10, 4:28, 3:18] = 1
    labels[3:9, 6:26, 22:38] = 2
    airways = np.zeros(hu.shape, bool)
    airways[1:11, 14:18, 19:21] = True
    specs = segment_specs(labels, airways)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    seg = build_segmentation(headers, specs, series_uid=pydicom.uid.generate_uid(), sop_uid=pydicom.uid.generate_uid(),
                             engine="classical", model=None, software_version="test")
    save_dicom(seg, root / "seg.dcm")
    return {"ct": root / "ct", "seg": root / "seg.dcm", "specs": specs}


def test_segments_on_the_ct_grid_equal_the_masks(seg_case):
    scene, _ = bootstrap()
    ct_node = volume_node_from_ct(scene, read_ct(seg_case["ct"]), "CT")
    node = load_dicom_seg(seg_case["seg"], scene, ct_node)
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == \
        ["Lungs", "Right lung", "Left lung", "Airways"]
    for index, spec in enumerate(seg_case["specs"]):
        segment_id = segmentation.GetNthSegmentID(index)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, ct_node)
        assert np.array_equal(mask > 0, spec.mask), spec.label
        assert segmentation.GetSegment(segment_id).GetColor() == pytest.approx(spec.color, abs=0.01)
    right = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Right lung")).GetTerminology()
    assert "39607008" in right and "24028007" in right  # Lung, modifier Right


def test_a_seg_of_another_grid_is_refused_with_one_line(seg_case, tmp_path):
    scene, _ = bootstrap()
    other = read_ct(seg_case["ct"])
    other.hu = other.hu[:, :, :30]  # fewer columns
    node = volume_node_from_ct(scene, other, "other")
    with pytest.raises(InputError, match="not on the grid of this CT"):
        load_dicom_seg(seg_case["seg"], scene, node)
