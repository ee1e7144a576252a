"""Library tests that run inside 3D Slicer's Python (ctest) and under pytest alike.

They need only the library and what Slicer ships (numpy, pydicom, SimpleITK): a sample chest
CT is written as DICOM, read back and checked by quality control with known answers.
"""
import tempfile
import unittest
from pathlib import Path

import numpy as np


class EmphysemaXAICoreTest(unittest.TestCase):
    def test_sample_series_round_trip_and_quality_control(self):
        from EmphysemaXAILib import read_ct, run_qc
        from EmphysemaXAILib.phantom.sample import make_sample_ct, write_sample_series

        with tempfile.TemporaryDirectory() as folder:
            write_sample_series(Path(folder) / "ct", seed=7)
            ct = read_ct(Path(folder) / "ct")
        expected = make_sample_ct(seed=7)
        self.assertTrue(np.array_equal(ct.hu, expected.hu))
        np.testing.assert_allclose(ct.spacing, expected.spacing)
        np.testing.assert_allclose(ct.origin, expected.origin, atol=1e-4)
        report = run_qc(ct)
        self.assertEqual(report.errors, [])
        self.assertAlmostEqual(report.measures["noise_hu"], 20.0, delta=1.6)
        self.assertEqual(report.measures["hu_min"], -1024)

    def test_contrast_and_seeds_profile(self):
        from EmphysemaXAILib import run_qc
        from EmphysemaXAILib.phantom.sample import make_sample_ct

        ct = make_sample_ct(seed=1, blood_hu=300.0, metal=True)
        report = run_qc(ct)
        self.assertTrue(any("contrast" in w for w in report.warnings))
        self.assertEqual(report.errors, [])
        self.assertTrue(run_qc(ct, profile="seeds").excluded)


if __name__ == "__main__":
    unittest.main()
