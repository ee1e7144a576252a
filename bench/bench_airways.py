"""Airways out of the lungs on real full chest CT degraded like a 4D-CT phase (issue 25).

For A0001 (Lung-PET-CT-Dx, ../shared/data) as is and degraded (Testing/airway_cases.py: noise
50 HU correlated, HU offsets, 2 mm slices, neck extended, all combined): the classical engine's
slices with an airway-density component inside the lungs, its airway voxels, and quality
control's tracheal air (offset undone). Run from the project root:
``OMP_NUM_THREADS=1 PYTHONPATH=EmphysemaXAI python bench/bench_airways.py [names...]``
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))
from airway_cases import DEGRADED, airway_components_in_lung, degrade  # noqa: E402

from EmphysemaXAILib import read_ct  # noqa: E402
from EmphysemaXAILib.analysis.qc import run_qc  # noqa: E402
from EmphysemaXAILib.segmentation import segment_lungs  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(names):
    ct0 = read_ct(DATA / "lung-pet-ct-dx-A0001")
    air0 = run_qc(ct0).measures["trachea_air_hu"]
    print(f"A0001 tracheal air {air0} HU")
    for name in names or DEGRADED:
        steps = DEGRADED[name]
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
    main(sys.argv[1:])
