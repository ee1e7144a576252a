"""Volume node <-> CTVolume on the real Slicer core (slicer-core wheel, headless)."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the headless extra) is not installed")

from helpers import ramp_volume, shared  # noqa: E402

from EmphysemaXAILib import read_ct  # noqa: E402
from EmphysemaXAILib.mrml.volumes import ct_from_volume_node, volume_node_from_ct  # noqa: E402
from EmphysemaXAILib.volume import CTVolume  # noqa: E402

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)


def ras_of_ijk(node, ijk):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array(matrix.MultiplyPoint([*ijk, 1.0])[:3])


def test_non_identity_direction_voxel_lands_at_the_right_ras_point():
    direction = np.array([[0.0, 0.0, 1.0], [0.8, 0.6, 0.0], [-0.6, 0.8, 0.0]])  # rotation, LPS
    ct = CTVolume(hu=ramp_volume((5, 6, 7)), spacing=(0.5, 0.75, 2.0), origin=(10.0, -20.0, 30.0),
                  direction=tuple(direction.ravel()))
    scene = slicer.vtkMRMLScene()
    node = volume_node_from_ct(scene, ct, "rotated")
    zyx = (3, 2, 4)
    lps = ct.index_to_lps(zyx)
    expected_ras = np.array([-lps[0], -lps[1], lps[2]])
    assert ras_of_ijk(node, zyx[::-1]) == pytest.approx(expected_ras, abs=1e-9)
    assert slicer.util.arrayFromVolume(node)[zyx] == ct.hu[zyx]
    back = ct_from_volume_node(node)
    assert np.array_equal(back.hu, ct.hu) and back.hu.dtype == np.int16
    assert back.origin == pytest.approx(ct.origin) and back.direction == pytest.approx(ct.direction)
    assert back.spacing == pytest.approx(ct.spacing)


def test_real_dicom_series_geometry_survives_the_round_trip():
    ct = read_ct(shared("cip-copdgene", "ct-64Dicom"))
    node = volume_node_from_ct(slicer.vtkMRMLScene(), ct)
    corner = ct.index_to_lps((78, 63, 63))
    assert ras_of_ijk(node, (63, 63, 78)) == pytest.approx([-corner[0], -corner[1], corner[2]], abs=1e-6)
    back = ct_from_volume_node(node)
    assert np.array_equal(back.hu, ct.hu)
    assert back.origin == pytest.approx(ct.origin, abs=1e-9)


def test_qc_on_a_volume_node_matches_qc_on_the_array():
    from EmphysemaXAILib.analysis.qc import run_qc
    from EmphysemaXAILib.phantom.sample import make_sample_ct

    ct = make_sample_ct(blood_hu=300)
    node = volume_node_from_ct(slicer.vtkMRMLScene(), ct)
    from_node, from_array = run_qc(ct_from_volume_node(node)).measures, run_qc(ct).measures
    assert from_node.pop("geometry") == "volume_node"
    from_array.pop("geometry")
    assert from_node == from_array
