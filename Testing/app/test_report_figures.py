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


def test_laa_and_pattern_colours_do_not_share_a_meaning():
    """No LAA-cluster colour is near a pattern colour (report and Slicer colour tables)."""
    from matplotlib.colors import to_rgb

    from EmphysemaXAILib.analysis.patterns import PATTERN_COLORS
    from EmphysemaXAILib.app.report_figures import LAA_COLORS

    patterns = [np.array(rgba[:3]) for _, _, rgba in PATTERN_COLORS if rgba[3] > 0]
    for laa in (np.array(to_rgb(c)) for c in LAA_COLORS):
        assert min(np.abs(laa - p).sum() for p in patterns) > 0.45, laa
    pytest.importorskip("slicer", reason="slicer-core (the headless extra) is not installed")
    from EmphysemaXAILib.mrml.nodes import LAA_COLORS as SLICER_LAA

    for (_, _, rgba), color in zip(SLICER_LAA[1:], LAA_COLORS):  # the Slicer colour table: the same scale
        assert np.abs(np.array(rgba[:3]) - np.array(to_rgb(color))).max() < 0.03


def test_report_zone_grades_come_from_the_class_figure_and_calibrated_comes_first():
    from EmphysemaXAILib.analysis.qct import QCTConfig, qct_severity
    from EmphysemaXAILib.app.report import _density_figures, _zone_figure

    zones = [f"{s}_{t}" for s in ("right", "left") for t in ("upper", "middle", "lower")]
    rows = [{"region": "whole", "laa950_pct": 1.0, "laa950_pct_calibrated": 12.0, "perc15_hu": -890,
             "perc15_hu_calibrated": -931.5, "robust_extent_pct": 0.5, "robust_extent_pct_calibrated": 9.0}]
    rows += [{"region": z, "laa950_pct": 0.2 * i, "laa950_pct_calibrated": 4.0 * i, "robust_extent_pct": 0.1 * i,
              "robust_extent_pct_calibrated": 3.5 * i} for i, z in enumerate(zones)]
    severity = qct_severity(rows, 40.0, QCTConfig())
    assert severity["extent_key"] == "robust_extent_pct_calibrated"

    from EmphysemaXAILib.analysis.qct import QCTResult

    Q = QCTResult(rows, severity, None, 40.0, QCTConfig())

    for i, zone in enumerate(zones):
        shown = float(_zone_figure(Q, zone, severity["extent_key"]))
        assert shown == pytest.approx(3.5 * i)
        grade = severity["zone_grades"][zone]
        assert grade == ("trace" if shown < 0.5 else "mild" if shown < 5 else "moderate" if shown < 20 else "severe")
    text = _density_figures(rows[0])
    assert text.index("calibrated %LAA-950 12.00%") < text.index("raw 1.00%")
