#!/usr/bin/env python3
"""Delphes ROOT -> Parquet, `delphes_convert` beside uproot, side by side.

Both convert the same four `_small` Delphes files (4 x 2000 events, from
$DQM_SHARED/delphes, default ../shared) with every MEDIC branch (Track:
P, PT, Eta, Phi, CtgTheta, C, L; Tower: ET, Eta, Phi, E, T, NTimeHits, Eem,
Ehad; MissingET: MET, Eta, Phi; the Track and Tower sizes) into
zstd-compressed Parquet, alternating, `--repeats` times each:

- ours: `pipeline run` of a one-stage pipeline (`delphes_convert`), timed by
  the stage's own wall time in the run summary (process start-up and
  libtorch loading excluded, as imports are for uproot);
- uproot 5 + awkward 2, two ways: `tree.arrays(branches)` per file, then
  `ak.to_arrow_table` + `pq.write_table(compression="zstd")` ("arrow"), or
  `ak.to_parquet(compression="zstd")` ("ak", uproot's fastest path to
  Parquet); timed after the imports.

Prints each run, the medians and the ratio to the faster uproot path. Needs uproot, awkward, pyarrow
(`pip install uproot awkward pyarrow`) and the dev `pipeline` ($PIPELINE).

Usage: scripts/bench/root_to_parquet.py [--repeats N] [--threads N]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts/reliability"))
from kill9 import pipeline_bin  # noqa: E402

TRACK = ["P", "PT", "Eta", "Phi", "CtgTheta", "C", "L"]
TOWER = ["ET", "Eta", "Phi", "E", "T", "NTimeHits", "Eem", "Ehad"]
MET = ["MET", "Eta", "Phi"]
CONFIGS = ["normal", "hcal_barrel_off", "hcal_endcap_off", "hcal_forward_off"]


def files():
    shared = Path(os.environ.get("DQM_SHARED", ROOT.parent / "shared"))
    out = [shared / f"delphes/dijet13_{c}_small.root" for c in CONFIGS]
    missing = [str(f) for f in out if not f.is_file()]
    if missing:
        sys.exit(f"missing {missing}: set DQM_SHARED to the shared data directory")
    return out


def ours(binary, workdir, threads):
    group = "\n".join(f"      - {{ path: {f}, label: {c} }}" for f, c in zip(files(), CONFIGS))
    yaml = workdir / "convert.yaml"
    yaml.write_text(f"name: convert\nstages:\n  events:\n    kind: delphes_convert\n"
                    f"    params:\n      files:\n{group}\n")
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([binary, "run", str(yaml), "--workdir", str(workdir / "w"),
                          "--force", "events"], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(out.stderr)
    line = next(l for l in out.stdout.splitlines() if l.startswith("events "))
    seconds = float(line.split()[4])
    size = sum(p.stat().st_size for p in (workdir / "w/pipelines/convert/events/main").glob("*.parquet"))
    return seconds, size


def uproot_convert(outdir, writer="arrow"):
    import awkward as ak
    import pyarrow.parquet as pq
    import uproot

    branches = ([f"Track.{b}" for b in TRACK] + [f"Tower.{b}" for b in TOWER]
                + [f"MissingET.{b}" for b in MET] + ["Track_size", "Tower_size"])
    t0 = time.perf_counter()
    size, reading = 0, 0.0
    for i, f in enumerate(files()):
        t = time.perf_counter()
        with uproot.open(f) as root:
            arrays = root["Delphes"].arrays(branches)
        reading += time.perf_counter() - t
        path = outdir / f"up-{i}.parquet"
        if writer == "ak":
            ak.to_parquet(arrays, path, compression="zstd")
        else:
            pq.write_table(ak.to_arrow_table(arrays), path, compression="zstd")
        size += path.stat().st_size
    return time.perf_counter() - t0, size, reading


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    import awkward  # noqa: F401  (imports outside the timing)
    import pyarrow.parquet  # noqa: F401
    import uproot  # noqa: F401

    binary = pipeline_bin()
    a, b, c, reads = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours(binary, tmp, args.threads)  # warm the page cache and the binary
        uproot_convert(tmp)
        uproot_convert(tmp, "ak")
        for r in range(args.repeats):
            s, size_a = ours(binary, tmp, args.threads)
            u, size_b, read = uproot_convert(tmp)
            k, size_c, _ = uproot_convert(tmp, "ak")
            a.append(s)
            b.append(u)
            c.append(k)
            reads.append(read)
            print(f"run {r}: delphes_convert {s:.3f} s ({size_a} B), uproot+arrow {u:.3f} s "
                  f"(of which reading {read:.3f} s; {size_b} B), uproot+ak.to_parquet {k:.3f} s ({size_c} B)")
    ma, mb, mc = statistics.median(a), statistics.median(b), statistics.median(c)
    best = min(mb, mc)
    print(f"\nmedian: delphes_convert {ma:.3f} s ({8000 / ma:,.0f} events/s, {args.threads} threads), "
          f"uproot+arrow {mb:.3f} s (reading alone {statistics.median(reads):.3f} s), "
          f"uproot+ak.to_parquet {mc:.3f} s; ratio to the faster uproot path {best / ma:.2f}x "
          f"(to arrow {mb / ma:.2f}x, to ak.to_parquet {mc / ma:.2f}x)")


if __name__ == "__main__":
    main()
