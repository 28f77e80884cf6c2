#!/usr/bin/env python3
"""DQM-layout ROOT files written by an independent writer (uproot), for the
`dqm_root` reader's tests and the example pipelines.

Writes `data/dqm/reader/`: DQM GUI harvested files
(`DQM_V0001_R000<run>__<dataset>__DQMIO.root`, folders
`DQMData/Run <run>/<Subsystem>/Run summary/...`) holding every histogram
class the reader supports (TH1C/S/I/F/D, TH2*, TH3*, TProfile), uniform and
variable bins, weighted histograms with fSumw2, one ZLIB, LZMA, LZ4, ZSTD and
uncompressed file each, a file outside the DQM layout (run from the file
name) and a TObjString beside the histograms (as DQM files hold); and
`data/dqm/reader/expected.json`: for every histogram its class, axes,
entries, sum of weights, and SHA-256 digests of the values written (every
bin in ROOT's order: under/overflow, x fastest), after checking that uproot
reads back exactly those values, so the tests compare the reader with what
was written, bin by bin, without uproot installed.

With `--from-lumi HISTOGRAMS --out DIR`, writes instead the project's own
per-LS histograms (an `ls_histograms` table made with `normalize: false`)
in every real format: DQM-layout ROOT files with per-LS folders, the CMS
per-LS CSV and Parquet layout, a Golden JSON of the good LS, a DCS-only
JSON and the luminosity tool's CSV, for `pipelines/lumi_from_dqm.yaml` and the round-trip
test (native histograms and the same read back give one certificate).

With `--from-runs RUNS --out DIR`, writes the project's synthetic run
histograms (a `synth_runs` table of one dataset) as one harvested DQM ROOT
file per run, a per-run CMS-layout Parquet table and the Golden JSON of the
good runs, for `pipelines/dinamo_from_dqm.yaml` and its round-trip test.

With `--from-hcal MAPS... --out DIR`, writes the project's occupancy maps
(`lumi_maps` tables) as per-LS HCAL DQM ROOT files (one TH2F iη × iφ per
depth on CMS axes, and an ME of the LS's events) and the CMS per-LS Parquet
layout, for `pipelines/hcal_from_dqm.yaml` and its round-trip test.

Seeded: the same content every time. Needs `pip install uproot numpy pandas
pyarrow`.
Usage: scripts/make_dqm_examples.py [--out data/dqm]
       scripts/make_dqm_examples.py --from-lumi TABLE --out DIR [--formats root,csv,parquet]
       scripts/make_dqm_examples.py --from-runs TABLE --out DIR [--formats root,parquet] [--first-run N]
       scripts/make_dqm_examples.py --from-hcal MAPS [MAPS...] --out DIR [--formats root,parquet]
"""

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import uproot
import uproot.writing.identify as ident

ROOT = Path(__file__).resolve().parents[1]


def axis(name, bins, low, high, edges=None):
    return ident.to_TAxis(
        fName=name,
        fTitle="",
        fNbins=bins,
        fXmin=low,
        fXmax=high,
        fXbins=None if edges is None else np.asarray(edges, dtype=">f8"),
    )


def axis_json(bins, low, high, edges=None):
    return {
        "bins": bins,
        "low": low,
        "high": high,
        "edges": None if edges is None else [float(e) for e in edges],
    }


class Writer:
    """Histograms written to one file, and what was written."""

    def __init__(self, path, compression):
        self.file = uproot.recreate(path, compression=compression)
        self.written = {}

    def close(self):
        self.file.close()

    def put(self, key, hist, record):
        self.file[key] = hist
        self.written[key] = record

    def th(self, key, dtype, axes, rng, weighted=False):
        """A TH1/TH2/TH3 of `dtype` with random integer-valued contents."""
        dims = len(axes)
        shape = [a[0] + 2 for a in axes]
        n = int(np.prod(shape))
        data = rng.integers(0, 50, size=n).astype(dtype)
        if weighted:
            data = (rng.random(n) * 20).astype(dtype)
        sumw2 = (data.astype(np.float64) * 1.5) if weighted else None
        entries = float(data.sum()) + 3.0
        sum_w = float(data.sum())
        ax = [axis(["xaxis", "yaxis", "zaxis"][k], *axes[k]) for k in range(dims)]
        common = dict(
            fName=None,
            fTitle=key.rsplit("/", 1)[-1],
            data=data,
            fEntries=entries,
            fTsumw=sum_w,
            fTsumw2=sum_w,
            fTsumwx=0.0,
            fTsumwx2=0.0,
            fSumw2=sumw2,
        )
        if dims == 1:
            hist = ident.to_TH1x(fXaxis=ax[0], **common)
        elif dims == 2:
            hist = ident.to_TH2x(
                fTsumwy=0.0, fTsumwy2=0.0, fTsumwxy=0.0, fXaxis=ax[0], fYaxis=ax[1], **common
            )
        else:
            hist = ident.to_TH3x(
                fTsumwy=0.0,
                fTsumwy2=0.0,
                fTsumwxy=0.0,
                fTsumwz=0.0,
                fTsumwz2=0.0,
                fTsumwxz=0.0,
                fTsumwyz=0.0,
                fXaxis=ax[0],
                fYaxis=ax[1],
                fZaxis=ax[2],
                **common,
            )
        self.put(
            key,
            hist,
            {
                "class": hist.classname,
                "axes": [axis_json(*a) for a in axes],
                "contents": [float(v) for v in data],
                "entries": entries,
                "sum_w": sum_w,
                "sumw2": [] if sumw2 is None else [float(v) for v in sumw2],
                "bin_entries": None,
            },
        )

    def profile(self, key, bins, low, high, rng):
        n = bins + 2
        w = rng.integers(0, 20, size=n).astype(np.float64)
        y = rng.normal(5.0, 1.0, size=n)
        sums = w * y
        sums2 = w * y * y
        hist = ident.to_TProfile(
            fName=None,
            fTitle=key.rsplit("/", 1)[-1],
            data=sums,
            fEntries=float(w.sum()),
            fTsumw=float(w.sum()),
            fTsumw2=float(w.sum()),
            fTsumwx=0.0,
            fTsumwx2=0.0,
            fTsumwy=float(sums.sum()),
            fTsumwy2=float(sums2.sum()),
            fSumw2=sums2,
            fBinEntries=w,
            fBinSumw2=w,
            fXaxis=axis("xaxis", bins, low, high),
        )
        self.put(
            key,
            hist,
            {
                "class": "TProfile",
                "axes": [axis_json(bins, low, high)],
                "contents": [float(v) for v in sums],
                "entries": float(w.sum()),
                "sum_w": float(w.sum()),
                "sumw2": [float(v) for v in sums2],
                "bin_entries": [float(v) for v in w],
            },
        )


def digest(values):
    """SHA-256 of the values as little-endian f64: equal exactly when every
    bin is equal, at a few bytes per histogram in the fixture."""
    return hashlib.sha256(np.asarray(values, dtype="<f8").tobytes()).hexdigest()


def read_back(path, written):
    """Checks that uproot reads back every bin that was written (raw contents
    in ROOT's order) and returns the fixture records: the written values'
    summary and digests."""
    out = {}
    with uproot.open(path) as f:
        for key, record in written.items():
            h = f[key]
            if record["class"] == "TProfile":
                # The raw Σ w·y of the TH1D inside (values() gives means).
                contents = np.asarray(h.bases[0].bases[-1])
            else:
                # uproot gives [x][y][z]; ROOT's global bin runs x fastest.
                contents = np.transpose(np.asarray(h.values(flow=True))).ravel()
            assert h.classname == record["class"], (path, key)
            assert contents.tolist() == record["contents"], (path, key, "contents")
            assert float(h.member("fEntries")) == record["entries"], (path, key)
            out[key] = {
                "class": record["class"],
                "axes": record["axes"],
                "entries": record["entries"],
                "sum_w": record["sum_w"],
                "cells": len(record["contents"]),
                "sum": float(np.sum(record["contents"])),
                "contents_sha256": digest(record["contents"]),
                "sumw2_sha256": digest(record["sumw2"]),
                "bin_entries_sha256": None
                if record["bin_entries"] is None
                else digest(record["bin_entries"]),
            }
    return out


def reader_files(out):
    rng = np.random.default_rng(28)
    hcal_eta = (83, -41.5, 41.5)
    hcal_phi = (72, 0.5, 72.5)
    files = {}
    compressions = [
        ("ZeroBias__Run2022C-Example", uproot.ZLIB(4)),
        ("ZeroBias__Run2022D-Example", uproot.LZMA(6)),
        ("JetMET__Run2022E-Example", uproot.LZ4(4)),
        ("JetMET__Run2022F-Example", uproot.ZSTD(5)),
        ("Muon__Run2022G-Example", None),
    ]
    written_by_file = {}
    for k, (dataset, compression) in enumerate(compressions):
        run = 355100 + 7 * k
        name = f"DQM_V0001_R000{run}__{dataset}__DQMIO.root"
        w = Writer(out / name, compression)
        base = f"DQMData/Run {run}"
        for depth in (1, 2):
            w.th(
                f"{base}/Hcal/Run summary/DigiTask/Occupancy/depth/depth{depth}",
                np.float32,
                [hcal_eta, hcal_phi],
                rng,
            )
        w.th(
            f"{base}/Hcal/Run summary/DigiTask/Occupancy/Occupancy3D",
            np.float32 if k % 2 == 0 else np.float64,
            [(13, -6.5, 6.5), (18, 0.5, 72.5), (4, 0.5, 4.5)],
            rng,
        )
        w.th(f"{base}/JetMET/Run summary/Jet/AK4/Pt", np.float32, [(50, 0.0, 500.0)], rng)
        w.th(f"{base}/JetMET/Run summary/Jet/AK4/Eta", np.float64, [(40, -5.0, 5.0)], rng)
        w.th(f"{base}/JetMET/Run summary/MET/MET", np.float64, [(30, 0.0, 300.0)], rng, weighted=True)
        edges = [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0]
        w.th(
            f"{base}/JetMET/Run summary/MET/SumET_variable",
            np.float64,
            [(len(edges) - 1, edges[0], edges[-1], edges)],
            rng,
        )
        w.th(f"{base}/L1T/Run summary/Counts/I", np.int32, [(10, 0.0, 10.0)], rng)
        w.th(f"{base}/L1T/Run summary/Counts/S", np.int16, [(10, 0.0, 10.0)], rng)
        w.th(f"{base}/L1T/Run summary/Counts/C", np.int8, [(10, 0.0, 10.0)], rng)
        w.th(f"{base}/L1T/Run summary/Map/I2", np.int32, [(5, 0.0, 5.0), (3, 0.0, 3.0)], rng)
        w.profile(f"{base}/Pixel/Run summary/Charge/profile_vs_ls", 20, 0.5, 20.5, rng)
        w.file[f"{base}/Hcal/Run summary/EventInfo/reportSummaryText"] = "good"
        w.close()
        files[name] = read_back(out / name, w.written)
        written_by_file[name] = w.written
    # A file outside the DQM layout: the run comes from its name.
    name = "histograms_R355200.root"
    w = Writer(out / name, uproot.ZLIB(1))
    w.th("Hcal/occupancy_depth1", np.float32, [hcal_eta, hcal_phi], rng)
    w.th("summary/pt", np.float64, [(12, 0.0, 120.0)], rng)
    w.close()
    files[name] = read_back(out / name, w.written)
    (out / "expected.json").write_text(json.dumps(files, indent=1) + "\n")
    dataframes(out, written_by_file)
    return files


DQMIO_CODE = {"TH1F": 3, "TH1S": 4, "TH1D": 5, "TH2F": 6, "TH2S": 7, "TH2D": 8, "TH1I": 12, "TH2I": 13}


def dataframes(out, written_by_file):
    """The 1-D and 2-D histograms of the DQM-layout files as a per-LS table
    in CMS's export layout (fromrun, fromlumi, hname, metype, histo, entries,
    Xmin, Xmax, Xbins, Ymin, Ymax, Ybins): `histo` a bracketed string of
    every bin (under/overflow, x fastest) in the CSV, a list in the Parquet
    file. Each run's MEs are given LS 1, and the TH1F MEs a copy at LS 2
    with every bin doubled."""
    import pandas as pd

    rows = []
    for name, written in written_by_file.items():
        if not name.startswith("DQM_"):
            continue
        for key, r in written.items():
            if r["class"] not in DQMIO_CODE:
                continue
            parts = key.split("/")
            run = int(parts[1].split()[1])
            me = "/".join(p for p in parts[2:] if p != "Run summary")
            axes = r["axes"] + [{"bins": 0, "low": 0.0, "high": 0.0}]
            copies = [(1, 1.0)] + ([(2, 2.0)] if r["class"] == "TH1F" else [])
            for ls, factor in copies:
                values = [v * factor for v in r["contents"]]
                rows.append(
                    {
                        "fromrun": run,
                        "fromlumi": ls,
                        "hname": me,
                        "metype": DQMIO_CODE[r["class"]],
                        "histo": values,
                        "entries": r["entries"] * factor,
                        "Xmin": axes[0]["low"],
                        "Xmax": axes[0]["high"],
                        "Xbins": axes[0]["bins"],
                        "Ymin": axes[1]["low"],
                        "Ymax": axes[1]["high"],
                        "Ybins": axes[1]["bins"],
                    }
                )
    frame = pd.DataFrame(rows)
    frame.to_parquet(out / "perls.parquet", index=False)
    text = frame.copy()
    text["histo"] = text["histo"].map(lambda v: "[" + ", ".join(repr(x) for x in v) + "]")
    text.to_csv(out / "perls.csv", index=False)
    return len(rows)


# The binning of `ls_histograms`' default MEs, and their DQM paths.
# The ME the DINAMO examples are written as: the generator's Gaussian
# (paper section 4), under a subsystem folder of its own.
DINAMO_SUBSYSTEM, DINAMO_ME = "DINAMO", "gaussian"

LUMI_MES = {
    "met": (40, 0.0, 200.0),
    "met_significance": (40, 0.0, 8.0),
    "leading_jet_pt": (40, 0.0, 800.0),
    "jet_eta": (40, -5.0, 5.0),
    "jet_phi": (36, -np.pi, np.pi),
    "n_jets": (20, 0.0, 20.0),
}


def lumi_examples(histograms, out, formats):
    """The project's own per-LS histograms (an `ls_histograms` table with
    `normalize: false`, read from `histograms`, a Parquet file or folder)
    written as a certifier receives real data: per-LS MEs in DQM-layout ROOT
    files (`DQMData/Run <run>/JetMET/Run summary/LS <ls>/<me>`, one TH1D each,
    written by uproot), the CMS per-LS CSV and Parquet layout, the Golden
    JSON of the good LS, a DCS-only JSON (every LS but the first two of each
    run) and the luminosity tool's per-LS CSV (in /pb)."""
    import pyarrow.parquet as pq

    table = pq.read_table(histograms).to_pandas()
    table = table.sort_values(["run", "ls", "me"], kind="stable")
    out.mkdir(parents=True, exist_ok=True)
    if "root" in formats:
        for run, rows in table.groupby("run", sort=True):
            path = out / f"DQM_V0001_R{run:09d}__ZeroBias__LumiExample__DQMIO.root"
            with uproot.recreate(path, compression=uproot.ZLIB(4)) as f:
                for r in rows.itertuples():
                    bins, low, high = LUMI_MES[r.me]
                    counts = np.asarray(r.counts, dtype=np.float64)
                    assert len(counts) == bins + 2, (run, r.ls, r.me)
                    f[f"DQMData/Run {run}/JetMET/Run summary/LS {r.ls}/{r.me}"] = ident.to_TH1x(
                        fName=None,
                        fTitle=r.me,
                        data=counts,
                        fEntries=float(r.entries),
                        fTsumw=float(counts[1:-1].sum()),
                        fTsumw2=float(counts[1:-1].sum()),
                        fTsumwx=0.0,
                        fTsumwx2=0.0,
                        fSumw2=None,
                        fXaxis=axis("xaxis", bins, low, high),
                    )
    frame = table.assign(
        fromrun=table["run"],
        fromlumi=table["ls"],
        hname="JetMET/" + table["me"],
        metype=5,
        histo=table["counts"].map(lambda c: [float(v) for v in c]),
        Xmin=table["me"].map(lambda m: LUMI_MES[m][1]),
        Xmax=table["me"].map(lambda m: LUMI_MES[m][2]),
        Xbins=table["me"].map(lambda m: LUMI_MES[m][0]),
        Ymin=0.0,
        Ymax=0.0,
        Ybins=0,
    )[["fromrun", "fromlumi", "hname", "metype", "histo", "entries", "Xmin", "Xmax", "Xbins", "Ymin", "Ymax", "Ybins"]]
    if "parquet" in formats:
        frame.to_parquet(out / "perls.parquet", index=False, compression="zstd")
    if "csv" in formats:
        text = frame.copy()
        text["histo"] = text["histo"].map(lambda v: "[" + ", ".join(repr(x) for x in v) + "]")
        text.to_csv(out / "perls.csv", index=False)
    # One row per LS: the LS columns are the same for every ME.
    per_ls = table.drop_duplicates(["run", "ls"]).sort_values(["run", "ls"])
    golden = {}
    for r in per_ls.itertuples():
        if not r.bad:
            ranges = golden.setdefault(str(r.run), [])
            if ranges and ranges[-1][1] == r.ls - 1:
                ranges[-1][1] = int(r.ls)
            else:
                ranges.append([int(r.ls), int(r.ls)])
    (out / "golden.json").write_text(
        "{\n" + ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in golden.items()) + "\n}\n"
    )
    # DCS-only: every LS with the detector on; here the first two LS of each
    # run are taken as the ramp-up, with a subdetector still off.
    dcs = {}
    for r in per_ls.itertuples():
        if r.ls > 2:
            ranges = dcs.setdefault(str(r.run), [])
            if ranges and ranges[-1][1] == r.ls - 1:
                ranges[-1][1] = int(r.ls)
            else:
                ranges.append([int(r.ls), int(r.ls)])
    (out / "dcs.json").write_text(
        "{\n" + ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in dcs.items()) + "\n}\n"
    )
    lines = [
        "#Data tag : example , Norm tag: None",
        "#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source",
    ]
    for r in per_ls.itertuples():
        lines.append(
            f"{r.run}:1,{r.ls}:{r.ls},01/01/26 00:00:00,STABLE BEAMS,6800,{r.lumi!r},{r.lumi!r},0.0,EXAMPLE"
        )
    (out / "lumi.csv").write_text("\n".join(lines) + "\n")
    return len(table)


def dinamo_examples(runs, out, formats, first_run):
    """The project's own run histograms (a `synth_runs` table of one
    dataset, read from `runs`, a Parquet file or folder) as a DQM shifter
    has them: one harvested DQM ROOT file per run
    (`DQMData/Run <run>/DINAMO/Run summary/gaussian`, a TH1D written by uproot)
    and the same as a per-run table in the CMS layout (no LS column), run
    numbers from `first_run` on; and the Golden JSON of the good runs (every
    LS of a bad run left out)."""
    import pyarrow.parquet as pq

    table = pq.read_table(runs).to_pandas().sort_values("run", kind="stable")
    if table["dataset"].nunique() != 1:
        raise SystemExit(f"{runs}: give one dataset, found {table['dataset'].nunique()}")
    table["run"] = table["run"] + first_run
    out.mkdir(parents=True, exist_ok=True)
    me = f"{DINAMO_SUBSYSTEM}/Run summary/{DINAMO_ME}"
    histo = table["counts"].map(lambda c: [0.0] + [float(v) for v in c] + [0.0])
    if "root" in formats:
        for r, counts in zip(table.itertuples(), histo):
            counts = np.asarray(counts, dtype=np.float64)
            path = out / f"DQM_V0001_R{r.run:09d}__ZeroBias__DinamoExample__DQMIO.root"
            with uproot.recreate(path, compression=uproot.ZLIB(4)) as f:
                f[f"DQMData/Run {r.run}/{me}"] = ident.to_TH1x(
                    fName=None,
                    fTitle=DINAMO_ME,
                    data=counts,
                    fEntries=float(counts.sum()),
                    fTsumw=float(counts[1:-1].sum()),
                    fTsumw2=float(counts[1:-1].sum()),
                    fTsumwx=0.0,
                    fTsumwx2=0.0,
                    fSumw2=None,
                    fXaxis=axis("xaxis", len(counts) - 2, float(r.lo), float(r.hi)),
                )
    if "parquet" in formats:
        frame = table.assign(
            fromrun=table["run"],
            hname=f"{DINAMO_SUBSYSTEM}/{DINAMO_ME}",
            metype=5,
            histo=histo,
            entries=histo.map(sum),
            Xmin=table["lo"],
            Xmax=table["hi"],
            Xbins=table["counts"].map(len),
            Ymin=0.0,
            Ymax=0.0,
            Ybins=0,
        )[["fromrun", "hname", "metype", "histo", "entries", "Xmin", "Xmax", "Xbins", "Ymin", "Ymax", "Ybins"]]
        frame.to_parquet(out / "runs.parquet", index=False, compression="zstd")
    # A good run is certified over its LS (here 1-50); a bad one not at all.
    golden = {str(r.run): [[1, 50]] for r in table.itertuples() if r.label == 0}
    (out / "golden.json").write_text(
        "{\n" + ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in golden.items()) + "\n}\n"
    )
    return len(table)


# The HCAL occupancy MEs of the examples: one TH2F iη × iφ per depth (CMS
# axes: iη −41…41, iφ 1…72) and an ME filled once per event.
HCAL_OCCUPANCY = "Hcal/DigiTask/Occupancy/depth/depth{depth}"
HCAL_EVENTS = "Hcal/DigiTask/Events"
IETA_AXIS = (83, -41.5, 41.5)
IPHI_AXIS = (72, 0.5, 72.5)


def hcal_examples(maps, out, formats):
    """The project's own occupancy maps (`lumi_maps` tables, each a Parquet
    file or folder) as HCAL DQM delivers them: per fill (written as the run)
    a DQM-layout ROOT file with per-LS folders
    (`DQMData/Run <run>/Hcal/Run summary/LS <ls>/DigiTask/...`) holding one
    TH2F per depth, the map's rings placed at iη ±1, ±2, … outwards from
    η = 0, and a one-bin TH1F whose entries are the LS's events; and the
    same in the CMS per-LS Parquet layout."""
    import pyarrow.parquet as pq

    rows = []
    for path in maps:
        table = pq.read_table(path)
        geometry = json.loads(table.schema.metadata[b"dqm.hcal.geometry"])
        n_ieta, n_iphi, n_depth = geometry["shape"]
        if geometry.get("cms") or n_ieta % 2 or n_ieta > 82 or n_iphi != 72:
            raise SystemExit(f"{path}: maps of the Delphes card with ≤ 82 rings and 72 iφ expected, got {geometry}")
        rows += table.select(["fill", "ls", "events", "occupancy"]).to_pylist()
    half = n_ieta // 2
    ieta = [r - half if r < half else r - half + 1 for r in range(n_ieta)]
    nx, ny = IETA_AXIS[0] + 2, IPHI_AXIS[0] + 2
    xbin = np.array([i + 42 for i in ieta])
    rows.sort(key=lambda r: (r["fill"], r["ls"]))
    out.mkdir(parents=True, exist_ok=True)

    def th2(occupancy, depth):
        occ = np.asarray(occupancy, dtype=np.float64).reshape(n_ieta, n_iphi, n_depth)[:, :, depth]
        data = np.zeros(nx * ny, dtype=np.float32)
        for p in range(n_iphi):
            data[xbin + nx * (p + 1)] = occ[:, p]
        return data

    frame = []
    files = {}
    for r in rows:
        run, ls = int(r["fill"]), int(r["ls"])
        for depth in range(n_depth):
            data = th2(r["occupancy"], depth)
            me = HCAL_OCCUPANCY.format(depth=depth + 1)
            frame.append((run, ls, me, 6, data.astype(np.float64).tolist(), float(data.sum()), *IETA_AXIS[1:], IETA_AXIS[0], *IPHI_AXIS[1:], IPHI_AXIS[0]))
            if "root" in formats:
                if run not in files:
                    files[run] = uproot.recreate(
                        out / f"DQM_V0001_R{run:09d}__ZeroBias__HcalExample__DQMIO.root", compression=uproot.ZLIB(4)
                    )
                sub = me.split("/", 1)[1]
                files[run][f"DQMData/Run {run}/Hcal/Run summary/LS {ls}/{sub}"] = ident.to_TH2x(
                    fName=None,
                    fTitle=me.rsplit("/", 1)[-1],
                    data=data,
                    fEntries=float(data.sum()),
                    fTsumw=float(data.sum()),
                    fTsumw2=float(data.sum()),
                    fTsumwx=0.0,
                    fTsumwx2=0.0,
                    fTsumwy=0.0,
                    fTsumwy2=0.0,
                    fTsumwxy=0.0,
                    fSumw2=None,
                    fXaxis=axis("xaxis", *IETA_AXIS),
                    fYaxis=axis("yaxis", *IPHI_AXIS),
                )
        events = float(r["events"])
        counts = np.array([0.0, events, 0.0])
        frame.append((run, ls, HCAL_EVENTS, 3, counts.tolist(), events, 0.0, 1.0, 1, 0.0, 0.0, 0))
        if "root" in formats:
            sub = HCAL_EVENTS.split("/", 1)[1]
            files[run][f"DQMData/Run {run}/Hcal/Run summary/LS {ls}/{sub}"] = ident.to_TH1x(
                fName=None,
                fTitle="events",
                data=counts.astype(np.float32),
                fEntries=events,
                fTsumw=events,
                fTsumw2=events,
                fTsumwx=0.0,
                fTsumwx2=0.0,
                fSumw2=None,
                fXaxis=axis("xaxis", 1, 0.0, 1.0),
            )
    for f in files.values():
        f.close()
    if "parquet" in formats:
        import pyarrow as pa

        columns = ["fromrun", "fromlumi", "hname", "metype", "histo", "entries", "Xmin", "Xmax", "Xbins", "Ymin", "Ymax", "Ybins"]
        table = pa.table({c: [row[k] for row in frame] for k, c in enumerate(columns)})
        pq.write_table(table, out / "perls.parquet", compression="zstd")
    return len(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "data" / "dqm"))
    parser.add_argument(
        "--from-lumi",
        metavar="HISTOGRAMS",
        help="write an ls_histograms table (normalize: false; Parquet file or folder) "
        "in the real formats to OUT instead of the reader's examples",
    )
    parser.add_argument(
        "--from-runs",
        metavar="RUNS",
        help="write a synth_runs table of one dataset (Parquet file or folder) as per-run "
        "DQM ROOT files and a per-run CMS-layout Parquet table to OUT",
    )
    parser.add_argument(
        "--from-hcal",
        metavar="MAPS",
        nargs="+",
        help="write lumi_maps tables (Parquet files or folders) as per-LS HCAL DQM ROOT files "
        "(TH2F iη × iφ per depth) and the CMS per-LS Parquet layout to OUT",
    )
    parser.add_argument(
        "--first-run",
        type=int,
        default=355000,
        help="with --from-runs: the run number of the first run",
    )
    parser.add_argument(
        "--formats",
        default="root,csv,parquet",
        help="with --from-lumi/--from-runs: which of root, csv, parquet to write "
        "(--from-runs: root, parquet)",
    )
    args = parser.parse_args()
    if args.from_lumi:
        n = lumi_examples(Path(args.from_lumi), Path(args.out), args.formats.split(","))
        print(f"{args.out}: {n} per-LS histograms as {args.formats}, golden.json, lumi.csv")
        return
    if args.from_hcal:
        n = hcal_examples([Path(m) for m in args.from_hcal], Path(args.out), args.formats.split(","))
        print(f"{args.out}: {n} LS maps as {args.formats}")
        return
    if args.from_runs:
        n = dinamo_examples(Path(args.from_runs), Path(args.out), args.formats.split(","), args.first_run)
        print(f"{args.out}: {n} run histograms as {args.formats}, golden.json")
        return
    out = Path(args.out) / "reader"
    out.mkdir(parents=True, exist_ok=True)
    files = reader_files(out)
    n = sum(len(f) for f in files.values())
    print(f"{out}: {len(files)} files, {n} histograms (uproot {uproot.__version__})")


if __name__ == "__main__":
    main()
