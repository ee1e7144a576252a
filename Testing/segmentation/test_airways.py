"""Airways out of the lungs on real scans: the trachea above the carina holds
no lung voxel, the main bronchi mostly none, the whole-lung mask still matches CIP's, and the
airways are kept as their own segment for display."""
import numpy as np
import pytest
from helpers import shared
from scipy import ndimage

from EmphysemaXAILib import read_ct
from EmphysemaXAILib.analysis.qc import run_qc
from EmphysemaXAILib.segmentation import segment_lungs


def dice(a, b):
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def ct64():
    ct = read_ct(shared("cip-copdgene", "ct-64.nrrd"))
    cip = read_ct(shared("cip-copdgene", "lm-64.nrrd")).hu.astype(np.int64)
    whole = read_ct(shared("cip-copdgene", "wholeLung-64.nrrd")).hu > 0
    return ct, cip, whole, segment_lungs(ct, engine="classical")


def test_ct64_trachea_above_the_carina_holds_no_lung_voxel(ct64):
    ct, cip, whole, seg = ct64
    # CIP's experts' label map: type 2 (airway) in region 0 (outside the lungs) is the trachea
    # and the main bronchi; the carina is the highest slice where that airway has two parts
    trachea_bronchi = cip == 2 * 256
    slices = np.flatnonzero(trachea_bronchi.any(axis=(1, 2)))[::-1]  # head first (LPS, z up)
    carina = next(k for k in slices if ndimage.label(trachea_bronchi[k])[1] >= 2)
    above = np.zeros_like(trachea_bronchi)
    above[carina + 1:] = trachea_bronchi[carina + 1:]
    assert above.sum() > 250  # the trachea spans about 26 slices of 4 mm here
    lungs = seg.labels > 0
    assert not (lungs & above).any()
    # most of the main bronchi below the carina are out of the lungs too (4 mm voxels blur the
    # last centimetre into the hilum)
    assert (lungs & trachea_bronchi).sum() < 0.2 * trachea_bronchi.sum()
    # the airways are their own label and lie on CIP's airway
    assert seg.airways is not None and (seg.airways & above).sum() >= 0.9 * above.sum()
    assert not (seg.airways & lungs).any()
    assert dice(lungs, whole) >= 0.98


def _trachea_by_threshold(hu, spacing, body_mid_x, body_mid_y):
    """An independent look at the trachea: from the head down, the dark (< -900 HU, noise smoothed) round
    section near the midline (100-700 mm2), followed while it stays one section of similar
    size (the carina splits it; noise specks are ignored).
    """
    pixel = spacing[0] * spacing[1]
    out = np.zeros(hu.shape, bool)
    current = None
    for k in range(hu.shape[0] - 1, -1, -1):
        parts, n = ndimage.label(ndimage.gaussian_filter(hu[k].astype(np.float32), 1.5) < -900)
        if current is None:
            for label in range(1, n + 1):
                section = parts == label
                area = section.sum() * pixel
                cy, cx = (c.mean() for c in np.nonzero(section))
                # in front of the spine (LPS: y grows to the back), near the midline
                if 100 <= area <= 700 and abs(cx - body_mid_x) * spacing[0] < 30 and cy < body_mid_y:
                    current = section
                    break
            if current is not None:
                out[k] = current
            continue
        hit = np.unique(parts[current & (parts > 0)])
        sizes = np.bincount(parts.ravel())[hit]
        big = hit[sizes >= 0.25 * current.sum()]  # noise specks aside
        if len(big) != 1 or not 0.4 * current.sum() <= sizes.max() <= 2.0 * current.sum():
            break
        current = parts == big[0]
        out[k] = current
    return out


def test_lung_pet_ct_dx_trachea_holds_no_lung_voxel():
    ct = read_ct(shared("lung-pet-ct-dx-A0001"))
    seg = segment_lungs(ct, engine="classical")
    body = ct.hu[ct.hu.shape[0] // 2] > -300
    mid_y, mid_x = (c.mean() for c in np.nonzero(body))
    trachea = _trachea_by_threshold(ct.hu, ct.spacing, mid_x, mid_y)
    lungs = seg.labels > 0
    trachea_slices = np.flatnonzero(trachea.any(axis=(1, 2)))
    lung_slices = np.flatnonzero(lungs.any(axis=(1, 2)))
    assert len(trachea_slices) >= 6
    # the trachea is followed down beside the lungs, not only above them
    assert len(np.intersect1d(trachea_slices, lung_slices)) >= 3
    assert not (lungs & trachea).any()
    assert (seg.airways & trachea).sum() >= 0.9 * trachea.sum()
    # the airways took no lung: the lungs hold about the air quality control finds enclosed by
    # the body (its coarse grid; the lungs add their vessels, the air adds the airways)
    lung_ml = lungs.sum() * np.prod(ct.spacing) / 1000.0
    air_ml = run_qc(ct).measures["lung_air_volume_ml"]
    assert 0.95 * air_ml <= lung_ml <= 1.15 * air_ml
    assert seg.airways.sum() * np.prod(ct.spacing) / 1000.0 < 150.0  # trachea to lobar bronchi
