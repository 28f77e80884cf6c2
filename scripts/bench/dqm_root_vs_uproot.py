#!/usr/bin/env python3
"""ROOT files of histograms -> Parquet: `dqm_root` beside uproot, side by side.

Writes (once, seeded) `--ls` lumisections x `--mes` MEs of TH1F histograms
(100 bins each) with uproot into `--files` DQM-layout files with per-LS
folders (`DQMData/Run <run>/JetMET/Run summary/LS <ls>/me<k>`), then
converts them to Parquet, alternating, `--repeats` times each:

- ours: `pipeline run` of a one-stage pipeline (`dqm_root`, `ls_pattern`),
  timed by the stage's own wall time in the run summary (process start-up
  and libtorch loading excluded, as imports are for uproot);
- uproot 5 -> pyarrow: every key of every file read as a histogram
  (`values(flow=True)`, entries, axis), gathered into the same long table
  (run, ls, me, contents, ...) and written with `pq.write_table(compression=
  "zstd")`, timed after the imports.

Prints each run, the medians, the ratio and the peak memory of each. Needs
uproot, numpy, pyarrow and the dev `pipeline` ($PIPELINE).

Usage: scripts/bench/dqm_root_vs_uproot.py [--ls 2000] [--mes 25] [--files 20] [--repeats 3]
"""

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts/reliability"))
from kill9 import pipeline_bin  # noqa: E402


def write_files(out, n_ls, n_mes, n_files):
    import uproot
    import uproot.writing.identify as ident

    rng = np.random.default_rng(5)
    per_file = (n_ls + n_files - 1) // n_files
    axis = ident.to_TAxis(fName="xaxis", fTitle="", fNbins=100, fXmin=0.0, fXmax=100.0)
    ls = 1
    for k in range(n_files):
        run = 360000 + k
        path = out / f"DQM_V0001_R000{run}__ZeroBias__Bench__DQMIO.root"
        with uproot.recreate(path) as f:
            for _ in range(per_file):
                if ls > n_ls:
                    break
                for m in range(n_mes):
                    data = rng.poisson(20.0, size=102).astype(np.float32)
                    f[f"DQMData/Run {run}/JetMET/Run summary/LS {ls}/me{m}"] = ident.to_TH1x(
                        fName=None,
                        fTitle="",
                        data=data,
                        fEntries=float(data.sum()),
                        fTsumw=float(data[1:-1].sum()),
                        fTsumw2=float(data[1:-1].sum()),
                        fTsumwx=0.0,
                        fTsumwx2=0.0,
                        fSumw2=None,
                        fXaxis=axis,
                    )
                ls += 1


def ours(pipeline, files, workdir):
    yaml = workdir / "bench.yaml"
    yaml.write_text(
        "name: bench\nstages:\n  hists:\n    kind: dqm_root\n"
        f"    params: {{ files: \"{files}/*.root\", ls_pattern: \"LS (\\\\d+)/\" }}\n"
    )
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M", pipeline, "run", str(yaml), "--workdir", str(workdir / "wd")],
        capture_output=True,
        text=True,
        check=True,
    )
    row = next(line for line in out.stdout.splitlines() if line.startswith("hists"))
    seconds = float(row.split()[4])
    rss_kb = int(out.stderr.strip().splitlines()[-1])
    return seconds, rss_kb / 1024


def theirs(files, out):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import uproot

    start = time.perf_counter()
    ls_re = re.compile(r"LS (\d+)/")
    runs, lss, mes, contents, entries = [], [], [], [], []
    for path in sorted(files.glob("*.root")):
        with uproot.open(path) as f:
            for key, cls in f.classnames(recursive=True).items():
                if not cls.startswith("TH1"):
                    continue
                h = f[key]
                parts = key.split(";")[0].split("/")
                runs.append(int(parts[1].split()[1]))
                me = "/".join(p for p in parts[2:] if p != "Run summary")
                lss.append(int(ls_re.search(me).group(1)))
                mes.append(ls_re.sub("", me))
                contents.append(np.asarray(h.values(flow=True), dtype=np.float64))
                entries.append(float(h.member("fEntries")))
    table = pa.table(
        {
            "run": runs,
            "ls": lss,
            "me": mes,
            "contents": pa.array(contents, type=pa.list_(pa.float64())),
            "entries": entries,
        }
    )
    pq.write_table(table, out, compression="zstd")
    return time.perf_counter() - start, len(runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ls", type=int, default=2000)
    parser.add_argument("--mes", type=int, default=25)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pipeline = pipeline_bin()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = tmp / "files"
        files.mkdir()
        start = time.perf_counter()
        write_files(files, args.ls, args.mes, args.files)
        size = sum(p.stat().st_size for p in files.glob("*.root")) / 2**20
        print(
            f"wrote {args.ls * args.mes} TH1F in {args.files} files ({size:.1f} MiB) "
            f"in {time.perf_counter() - start:.1f} s"
        )
        ours_s, theirs_s, ours_mb = [], [], []
        for k in range(args.repeats):
            work = tmp / f"run{k}"
            work.mkdir()
            s, mb = ours(pipeline, files, work)
            ours_s.append(s)
            ours_mb.append(mb)
            t, n = theirs(files, work / "uproot.parquet")
            theirs_s.append(t)
            print(f"run {k + 1}: dqm_root {s:.2f} s ({mb:.0f} MB peak) | uproot {t:.2f} s ({n} histograms)")
        a, b = statistics.median(ours_s), statistics.median(theirs_s)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"median: dqm_root {a:.2f} s, uproot {b:.2f} s: {b / a:.1f}x; "
            f"peak memory dqm_root {max(ours_mb):.0f} MB, this Python process {peak:.0f} MB"
        )


if __name__ == "__main__":
    main()
