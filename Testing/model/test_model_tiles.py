"""The severity model's working grid and lung tiles: resampling, partition, truth, painting."""
import numpy as np
import pytest

from EmphysemaXAILib.model.tiles import FILL_HU, extract_tiles, paint_tiles, tile_corners, to_working_grid
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.volume import CTVolume


def _blob_lung(shape=(20, 90, 100), seed=0):
    z, y, x = np.indices(shape)
    lung = (((y - 45) ** 2 / 35 ** 2 + (x - 30) ** 2 / 22 ** 2 < 1) * 1
            + ((y - 45) ** 2 / 35 ** 2 + (x - 72) ** 2 / 22 ** 2 < 1) * 2)
    lung[:2] = 0
    return lung.astype(np.uint8)


@pytest.mark.parametrize("offset", [(0, 0, 0), (1, 17, 40), (2, 63, 5)])
def test_tiles_partition_the_lung(offset):
    rng = np.random.default_rng(1)
    labels = _blob_lung()
    hu = rng.normal(-850, 30, labels.shape).astype(np.float32)
    lung = labels > 0
    corners = tile_corners(lung, 32, 3, offset)
    tiles, extra = extract_tiles(hu, lung, corners, 32, 3, {"labels": labels})
    assert tiles.images.shape == (len(corners), 3, 32, 32)
    assert tiles.lung_count.sum() == lung.sum()          # every lung voxel in exactly one tile
    assert (tiles.lung_count > 0).all()
    assert (tiles.images[~tiles.lung] == FILL_HU).all()  # the model sees lung only
    assert np.allclose(tiles.images[tiles.lung].sum(), hu[lung].sum(), rtol=1e-5)
    assert (extra["labels"][tiles.lung] > 0).all()
    values = np.arange(len(corners), dtype=np.float32) + 1
    painted = paint_tiles(lung.shape, corners, values, 32, 3)
    weighted = (values * tiles.lung_count).sum() / tiles.lung_count.sum()
    assert painted[lung].mean() == pytest.approx(weighted, rel=1e-6)


def test_working_grid_resamples_with_anti_aliasing_and_flags_coarse_input():
    rng = np.random.default_rng(2)
    shape = (40, 120, 120)
    labels = np.zeros(shape, np.uint8)
    labels[5:35, 20:100, 20:60], labels[5:35, 20:100, 62:100] = 1, 2
    noise = rng.normal(-850, 50, shape).astype(np.float32)
    fine = CTVolume(noise, (0.7, 0.7, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    grid = to_working_grid(fine, labels)
    assert grid.hu.shape == (29, 60, 60) and grid.spacing == (1.4, 1.4, 1.4)
    assert set(np.unique(grid.labels)) == {0, 1, 2}                      # nearest neighbour keeps codes
    assert (grid.labels == 1).sum() * 1.4 ** 3 == pytest.approx((labels == 1).sum() * 0.49, rel=0.08)
    assert grid.hu.std() < 0.6 * noise.std()                            # blurred before sampling
    assert not grid.low_confidence and grid.notes == []
    coarse = CTVolume(noise[::5], (0.7, 0.7, 5.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    flagged = to_working_grid(coarse, labels[::5])
    assert flagged.low_confidence and "coarser" in flagged.notes[0] and "z" in flagged.notes[0]
    single = CTVolume(noise[20:21], (0.7, 0.7, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    one = to_working_grid(single, labels[20:21])
    assert one.one_slice and one.low_confidence and one.hu.shape == (1, 60, 60)
    tiles, _ = extract_tiles(one.hu, one.labels > 0, tile_corners(one.labels > 0, 32, 3), 32, 3)
    assert tiles.lung_count.sum() == 3 * (one.labels > 0).sum()          # the slice fills the 3 channels


def test_phantom_tiles_carry_the_exact_truth():
    from EmphysemaXAILib.model.severity_dataset import phantom_tiles

    phantom = generate_phantom(PhantomParams(size="small", seed=4, extent_pct=18, pattern="mixed"))
    tiles = phantom_tiles(phantom, 100000, size=32, slices=3, offsets=1, seed=0)  # every tile of one tiling
    lung = tiles.lung.sum(axis=(1, 2, 3))
    extent = 100 * (tiles.fraction * lung).sum() / lung.sum()
    # on the working grid (2.5 -> 1.4 mm, nearest neighbour) the lesion share stays the truth's
    assert extent == pytest.approx(phantom.truth["extent_pct"], abs=0.5)
    assert set(np.unique(tiles.subtype)) <= {0, 1, 2, 3, 4} and (tiles.subtype[tiles.fraction == 0] == 0).all()
    assert set(np.unique(tiles.zone)) == {0, 1, 2}
