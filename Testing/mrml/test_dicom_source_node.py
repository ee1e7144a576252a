"""A CT the DICOM browser loaded is analysed from its DICOM files (so DICOM SEG / SR reference the
source series) exactly when the node still holds those files' CT (issue 26, defect 5): the path
the browser takes, a volume node with no storage node and the ``DICOM.instanceUIDs`` attribute."""
import numpy as np
import pydicom
import pytest

pytest.importorskip("slicer", reason="slicer-core (the headless extra) is not installed")

import slicer.util  # noqa: E402

from EmphysemaXAILib.io.dicom_write import write_dicom_series  # noqa: E402
from EmphysemaXAILib.io.read import read_ct  # noqa: E402
from EmphysemaXAILib.mrml.app import bootstrap  # noqa: E402
from EmphysemaXAILib.mrml.dicom_results import dicom_source_folder  # noqa: E402
from EmphysemaXAILib.mrml.volumes import volume_node_from_ct  # noqa: E402

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)


class FakeDatabase:
    """ctkDICOMDatabase's one call used here: the file of a SOP instance UID."""

    def __init__(self, paths):
        self.files = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): str(p) for p in paths}

    def fileForInstance(self, uid):
        return self.files.get(uid, "")


@pytest.fixture
def browser_volume(tmp_path):
    """(scene, node, database): the series as the DICOM browser leaves it in the scene."""
    hu = np.random.default_rng(3).integers(-1000, 200, (12, 40, 48)).astype(np.int16)
    paths = write_dicom_series(hu, tmp_path / "ct", spacing=(0.8, 0.7, 2.5), origin=(-12.0, 30.0, -100.0), seed=5)
    scene, _ = bootstrap(fresh=True)
    node = volume_node_from_ct(scene, read_ct(tmp_path / "ct", reorient=False), "CT")
    database = FakeDatabase(paths)
    node.SetAttribute("DICOM.instanceUIDs", " ".join(database.files))
    assert node.GetStorageNode() is None and node.GetModifiedSinceRead()   # why the old test could not tell
    return scene, node, database


def test_an_unmodified_browser_volume_is_read_from_its_dicom_files(browser_volume, tmp_path):
    _, node, database = browser_volume
    (tmp_path / "work").mkdir()
    folder = dicom_source_folder(node, database, tmp_path / "work")
    assert folder is not None and len(list(folder.iterdir())) == 12
    assert np.array_equal(read_ct(folder).hu, read_ct(tmp_path / "ct").hu)


@pytest.mark.parametrize("edit", ["voxel", "spacing", "origin"])
def test_an_edited_browser_volume_is_not_taken_for_its_files(browser_volume, tmp_path, edit):
    _, node, database = browser_volume
    if edit == "voxel":
        voxels = slicer.util.arrayFromVolume(node)
        voxels[5, 20, 20] += 1                                     # one painted voxel
        slicer.util.arrayFromVolumeModified(node)
    elif edit == "spacing":
        node.SetSpacing(0.8, 0.7, 3.0)
    else:
        origin = list(node.GetOrigin())
        node.SetOrigin(origin[0] + 1.0, origin[1], origin[2])
    (tmp_path / "work").mkdir()
    assert dicom_source_folder(node, database, tmp_path / "work") is None
    assert not (tmp_path / "work" / "source").exists()            # nothing left behind
