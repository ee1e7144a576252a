"""Helpers of the report figures that avoid whole-volume copies give what the copies gave."""
import numpy as np
import pytest

from EmphysemaXAILib.app.report_figures import display_top, lung_histogram


def test_lung_histogram_equals_numpy_on_the_lung_voxels():
    rng = np.random.default_rng(3)
    hu = rng.integers(-1200, 400, size=(6, 20, 25)).astype(np.int16)
    hu[0, 0, :3] = (200, -1100, 201)  # the last edge is inside the last bin, 201 outside
    labels = rng.integers(0, 3, size=hu.shape).astype(np.uint8)
    labels[0, 0, :3] = 1
    edges = np.arange(-1100, 201, 5)
    assert np.array_equal(lung_histogram(hu, labels, edges), np.histogram(hu[labels > 0], bins=edges)[0])
    assert lung_histogram(hu, np.zeros_like(labels), edges).sum() == 0


def test_display_top_is_the_995th_percentile_of_the_positive_values():
    volume = np.zeros((4, 5, 6), np.float32)
    volume[1, 1:4, 1:5] = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    assert display_top(volume) == pytest.approx(np.percentile(np.arange(1, 13), 99.5), rel=1e-6)
    assert display_top(np.zeros((2, 2, 2), np.float32)) == 1.0


def test_release_free_memory_trims_with_glibc_and_is_harmless_elsewhere():
    import platform

    from EmphysemaXAILib.app.case_files import release_free_memory

    done = release_free_memory()
    assert isinstance(done, bool)
    if platform.libc_ver()[0] == "glibc":
        assert done
