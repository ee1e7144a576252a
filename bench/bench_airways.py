"""Airways out of the lungs on real full chest CT degraded like a 4D-CT phase (issue 25).

For A0001 (Lung-PET-CT-Dx, ../shared/data) as is and degraded (Testing/airway_cases.py: noise
50 HU correlated, HU offsets, 2 mm slices, neck extended, all combined): the classical engine's
slices with an airway-density component inside the lungs, its airway voxels, and quality
control's tracheal air (offset undone). Run from the project root:
``OMP_NUM_THREADS=1 PYTHONPATH=EmphysemaXAI python bench/bench_airways.py [--ct64] [names...]``
(``--ct64``: COPDGene ct-64, 4 mm voxels, with emphysema, instead of A0001; ``AIR_HU=-915``
in the environment sets the air level the measure uses).

Measured 2026-12-07 (2 shared cores). Slices with an airway section inside the lungs / lung
slices; QC's tracheal air with the offset undone (A0001: -978 HU):

| series | main (7b383bf) | one airway finder |
|---|---|---|
| original | 0 / 55, -978 | 0 / 55, -978 |
| noise50 | 0 / 55, -972 | 0 / 55, -972 |
| offset+37 | 28 / 63 (lungs up the neck; 211 airway voxels), -978 | 0 / 55, -977 |
| offset-40 | 0 / 55, -978 | 0 / 55, -978 |
| slices2mm | 0 / 137, -971 | 0 / 137, -971 |
| neck | 0 / 55, -978 | 0 / 55, -978 |
| combined (+37) | 6 / 137 (3D growing leaked), -980 | 0 / 137, -976 |
| combined+15 (the issue's series) | 63 / 154 (lungs up the neck), -977 | 0 / 137, -976 |
| combined-40 | 0 / 139, -977 | 0 / 139, -977 |
| combined+37-noise80 | 6 / 138, -983 | 0 / 138, -981 |
| ct-64 noise50 (``--ct64``) | 2 / 69 | 0 / 69 |

Airways segment on A0001 as is: 12,999 voxels on main, 15,541 with the one finder (the trachea
up to the top of the scan, main bronchi traced 20 mm below the carina, lobar bronchi grown).
Quality control costs about 9 ms more per slice (the finder runs at full resolution).
"""
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))
from airway_cases import DEGRADED, MORE, airway_components_in_lung, degrade  # noqa: E402

from EmphysemaXAILib import read_ct  # noqa: E402
from EmphysemaXAILib.analysis.qc import run_qc  # noqa: E402
from EmphysemaXAILib.segmentation import segment_lungs  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(names, series="lung-pet-ct-dx-A0001"):
    ct0 = read_ct(DATA / series)
    air0 = run_qc(ct0).measures["trachea_air_hu"]
    if os.environ.get("AIR_HU"):  # the air level to measure with (e.g. on code without case_airways)
        air0 = float(os.environ["AIR_HU"])
    elif air0 is None:  # ct-64: the trachea is too narrow for 4 mm pixels; its core read on the original
        from EmphysemaXAILib.segmentation import case_airways

        air0 = case_airways(ct0).air_hu
    print(f"{series} tracheal air {air0} HU")
    every = {**DEGRADED, **MORE}
    for name in names or every:
        steps = every[name]
        ct = degrade(ct0, steps) if steps else ct0
        offset = sum(v for s, v in steps if s == "offset")
        start = time.perf_counter()
        seg = segment_lungs(ct, engine="classical")
        seconds = time.perf_counter() - start
        m = run_qc(ct).measures
        bad = airway_components_in_lung(ct.hu, seg.labels, ct.spacing, air_hu=air0 + offset)
        lung_slices = np.flatnonzero((seg.labels > 0).any(axis=(1, 2)))
        qc_air = None if m["trachea_air_hu"] is None else round(m["trachea_air_hu"] - offset, 1)
        print(f"{name:10s} {ct.shape} slices failing {len(set(b[0] for b in bad))} of {len(lung_slices)} "
              f"lung slices {sorted(set(b[0] for b in bad))}; airway voxels {int(seg.airways.sum())}; "
              f"QC tracheal air (offset undone) {qc_air} ({m['trachea_air_voxels']} voxels, "
              f"{m['trachea_air_level']}); segment {seconds:.1f} s; warnings {seg.warnings}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--ct64":
        main(args[1:], "cip-copdgene/ct-64.nrrd")
    else:
        main(args)
