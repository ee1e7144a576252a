"""Benchmark: reading CT series (time and peak memory), ours beside SimpleITK's GDCM reader.

Usage (from the project root): ``.venv/bin/python bench/bench_read.py [--sizes 400,600] [--skip-real]``

Each measurement runs in a fresh subprocess: the peak RSS counter (VmHWM) is reset just before
the read, so "peak +MB" is what the read itself added on top of the imported libraries. Times
are the second of two reads (warm file cache). The goal: reading a 512 x 512 x 600
series raises peak RSS by at most 2.5x the int16 volume size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"

CHILD = r"""
import json, sys, time
from pathlib import Path
path, reader = sys.argv[1], sys.argv[2]
if reader == "ours":
    from EmphysemaXAILib import read_ct
    def read():
        return read_ct(path).hu
else:
    import SimpleITK as sitk
    def read():
        r = sitk.ImageSeriesReader()
        r.SetFileNames(r.GetGDCMSeriesFileNames(path))
        return sitk.GetArrayFromImage(r.Execute())
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
read()  # warm the file cache and the code paths
import gc; gc.collect()
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM (peak RSS) to the current RSS
start = time.perf_counter()
hu = read()
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": status("VmHWM") - base,
                  "volume_mb": hu.size * 2 / 2**20, "shape": list(hu.shape)}))
"""


def measure(path: Path, reader: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), reader], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def generated_series(slices: int) -> Path:
    """A 512 x 512 x ``slices`` synthetic chest series (written once, then reused)."""
    folder = OUT / f"sample_512x512x{slices}"
    if not folder.exists() or len(list(folder.glob("*.dcm"))) != slices:
        from EmphysemaXAILib.io.dicom_write import write_dicom_series
        from EmphysemaXAILib.phantom.sample import make_sample_ct

        print(f"writing {folder} ...", file=sys.stderr)
        ct = make_sample_ct(seed=0, shape=(slices, 512, 512), spacing=(0.7, 0.7, 1.0))
        write_dicom_series(ct.hu, folder, ct.spacing, ct.origin, ct.direction)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="400,600", help="slice counts of generated 512 x 512 series")
    parser.add_argument("--skip-real", action="store_true", help="skip the ../shared/data series")
    args = parser.parse_args()
    cases = []
    if not args.skip_real:
        for name in ("cip-copdgene/ct-64Dicom", "lung-pet-ct-dx-A0001", "lidc-two-slices"):
            if (SHARED / name).exists():
                cases.append((name, SHARED / name))
            else:
                print(f"skipped {name}: {SHARED / name} not present", file=sys.stderr)
    for slices in (int(s) for s in args.sizes.split(",") if s):
        cases.append((f"generated 512x512x{slices}", generated_series(slices)))

    header = (f"{'series':30} {'shape (z,y,x)':16} {'ours s':>7} {'sitk s':>7} {'ours/sitk':>9} "
              f"{'int16 MB':>9} {'ours peak +MB':>13} {'x volume':>8} {'sitk peak +MB':>13}")
    print(header)
    print("-" * len(header))
    for name, path in cases:
        ours, sitk = measure(path, "ours"), measure(path, "sitk")
        print(f"{name:30} {'x'.join(map(str, ours['shape'])):16} {ours['seconds']:7.2f} "
              f"{sitk['seconds']:7.2f} {ours['seconds'] / sitk['seconds']:9.2f} "
              f"{ours['volume_mb']:9.1f} {ours['peak_mb']:13.1f} "
              f"{ours['peak_mb'] / ours['volume_mb']:8.2f} {sitk['peak_mb']:13.1f}")


if __name__ == "__main__":
    main()
