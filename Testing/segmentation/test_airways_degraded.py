"""Airways out of the lungs on a full real chest CT degraded like a 4D-CT phase (issue 25):
Lung-PET-CT-Dx A0001 as is, with 50 HU correlated noise, +37 / -40 HU offsets, 2 mm slices, the
neck extended upward, and all combined (``airway_cases.py``). On every version: no airway
section inside the lung labels on any slice (:func:`airway_components_in_lung`), the Airways
segment holds the trachea from the top of the lungs to the carina and both main bronchi, and
quality control's tracheal air is the original's once the offset is undone."""
import numpy as np
import pytest
from airway_cases import DEGRADED, airway_components_in_lung, body_midline_x, degrade
from helpers import shared
from scipy import ndimage

from EmphysemaXAILib import read_ct
from EmphysemaXAILib.analysis.qc import run_qc
from EmphysemaXAILib.segmentation import case_airways, engine_airways, segment_lungs

NAMES = list(DEGRADED)


@pytest.fixture(scope="module")
def original():
    ct = read_ct(shared("lung-pet-ct-dx-A0001"))
    return ct, run_qc(ct).measures["trachea_air_hu"]


@pytest.fixture(scope="module")
def cases(original):
    """name -> (ct, offset, classical segmentation, QC measures), made once per name."""
    made = {}

    def case(name):
        if name not in made:
            ct0 = original[0]
            steps = DEGRADED[name]
            ct = degrade(ct0, steps) if steps else ct0
            offset = sum(value for step, value in steps if step == "offset")
            made[name] = (ct, offset, segment_lungs(ct, engine="classical"), run_qc(ct).measures)
        return made[name]
    return case


def _sides_below(airways, trachea, spacing, carina, down, reach_mm=40.0, off_mm=8.0, min_mm2=20.0):
    """Slices within ``reach_mm`` below the carina holding an airway section (at least
    ``min_mm2``) centred more than ``off_mm`` to each side of the trachea's centre above the
    carina: (right-side count, left-side count)."""
    above = trachea[carina - down] if trachea[carina - down].any() else trachea[carina - 2 * down]
    centre = np.nonzero(above)[1].mean()
    right = left = 0
    for step in range(int(reach_mm / spacing[2]) + 1):
        k = carina + down * step
        if not 0 <= k < airways.shape[0]:
            break
        parts, n = ndimage.label(airways[k])
        sizes = np.bincount(parts.ravel()) * spacing[0] * spacing[1]
        xs = [np.nonzero(parts == i)[1].mean() for i in range(1, n + 1) if sizes[i] >= min_mm2]
        right += any((centre - x) * spacing[0] > off_mm for x in xs)   # LPS: the patient's right at lower x
        left += any((x - centre) * spacing[0] > off_mm for x in xs)
    return right, left


@pytest.mark.parametrize("name", NAMES)
def test_no_airway_inside_the_lungs_and_trachea_to_both_main_bronchi(cases, original, name):
    ct, offset, seg, _ = cases(name)
    lungs = seg.labels > 0
    bad = airway_components_in_lung(ct.hu, seg.labels, ct.spacing, air_hu=original[1] + offset)
    assert bad == [], f"{name}: airway sections inside the lungs (slice, mm2, mm off the midline): {bad}"
    assert not (seg.airways & lungs).any()
    # the trachea: an airway section near the midline on every slice from the top of the lungs
    # down to the carina (the first slice where the airway is two sections), which lies at
    # least 40 mm below the lungs' top (z grows to the head)
    found = case_airways(ct)
    lung_top = int(np.flatnonzero(lungs.any(axis=(1, 2)))[-1])
    assert lung_top - found.carina >= 40.0 / ct.spacing[2]
    for k in range(found.carina, lung_top + 1):
        parts, n = ndimage.label(seg.airways[k])
        assert n, f"{name}: no airway on slice {k}"
        mid = body_midline_x(ct.hu, k)
        centres = [np.nonzero(parts == i)[1].mean() for i in range(1, n + 1)]
        assert min(abs(c - mid) for c in centres) * ct.spacing[0] < 25.0, f"{name}: slice {k}"
    # both main bronchi: airway on each side of the midline on several slices below the carina
    right, left = _sides_below(seg.airways, found.trachea, ct.spacing, found.carina, -1)
    assert right >= 10.0 / ct.spacing[2] and left >= 10.0 / ct.spacing[2], (name, right, left)
    # and no more than a trachea with its main and lobar bronchi
    assert seg.airways.sum() * np.prod(ct.spacing) / 1000.0 < 150.0


@pytest.mark.parametrize("name", NAMES)
def test_tracheal_air_for_calibration_unchanged(cases, original, name):
    _, offset, _, measures = cases(name)
    assert measures["trachea_air_level"] == "intrathoracic"
    assert measures["calibration_air_source"] == "trachea"
    assert measures["trachea_air_hu"] - offset == pytest.approx(original[1], abs=8.0)


def test_original_tracheal_air():
    """A0001's tracheal air as QC measured it before the one finder (its own coarse tracker)."""
    ct = read_ct(shared("lung-pet-ct-dx-A0001"))
    assert run_qc(ct).measures["trachea_air_hu"] == pytest.approx(-978.0, abs=2.0)


def test_an_engine_that_labels_the_trachea_lung_loses_it(cases, original):
    """What lungmask's labels go through (``engine_airways``): lung labels that run up the
    trachea (the classical lungs plus the airway lumen and its wall, as on the 4D-CT of
    issue 25) lose the trachea and the main bronchi; lobes follow; the lungs are otherwise kept."""
    ct, offset, seg, _ = cases("combined")
    grown = ndimage.binary_dilation(seg.airways, iterations=2)
    labels = seg.labels.copy()
    labels[grown & (labels == 0)] = 1
    assert len(airway_components_in_lung(ct.hu, labels, ct.spacing, air_hu=original[1] + offset)) > 20
    lobes = np.where(labels > 0, 3, 0).astype(np.uint8)
    cleaned, cleaned_lobes, airways = engine_airways(ct, labels, lobes)
    assert airway_components_in_lung(ct.hu, cleaned, ct.spacing, air_hu=original[1] + offset) == []
    assert airways is not None and not (airways & (cleaned > 0)).any()
    assert ((cleaned_lobes > 0) == (cleaned > 0)).all()
    kept = (cleaned > 0).sum() / (seg.labels > 0).sum()
    assert 0.98 < kept <= 1.01


def test_a_users_mask_is_used_as_given_with_the_airways_beside_it(cases, original):
    """A user's lung mask that holds the trachea is not altered (its densitometry is the user's
    choice); the airways are found beside it for display (``airways.nrrd``, the Airways segment)."""
    from EmphysemaXAILib import analyze_case
    from EmphysemaXAILib.options import AnalysisOptions

    ct, _, seg, _ = cases("original")
    mask = seg.labels.copy()
    mask[ndimage.binary_dilation(seg.airways, iterations=2) & (mask == 0)] = 1
    result = analyze_case(ct, AnalysisOptions(model="none"), lung_mask=mask)
    assert result.segmentation.engine_used == "file"
    assert np.array_equal(result.segmentation.labels, mask)
    airways = result.segmentation.airways
    assert airways is not None and (airways & seg.airways).sum() >= 0.5 * seg.airways.sum()
    assert (airways & (mask > 0)).sum() >= 0.9 * airways.sum()  # the user's mask holds them: shown, not removed


@pytest.mark.parametrize("name", ["original", "noise50", "combined+15"])
def test_copdgene_ct64_degraded_has_no_airway_inside_the_lungs(name):
    """COPDGene ct-64 (4 mm voxels, emphysema): main's classical engine left airway sections in
    the lungs on 2 slices with 50 HU noise added. The air level the measure uses is the
    trachea's core as the finder reads it on the original (partial volume: -915 HU)."""
    ct0 = read_ct(shared("cip-copdgene", "ct-64.nrrd"))
    air = case_airways(ct0).air_hu
    assert -960 < air < -880
    steps = DEGRADED[name]
    ct = degrade(ct0, steps) if steps else ct0
    offset = sum(value for step, value in steps if step == "offset")
    seg = segment_lungs(ct, engine="classical")
    assert airway_components_in_lung(ct.hu, seg.labels, ct.spacing, air_hu=air + offset) == []
    assert seg.airways.any() and not (seg.airways & (seg.labels > 0)).any()
