#!/usr/bin/env python3
"""The bad-input suite as a table: each case is a pipeline (and input files)
that must fail with a clear message — naming the stage, and the file or
field at fault — a non-zero exit, and nothing written for the failing stage.

Every case runs in a fresh directory; "written" counts cache entries and
staging directories of the failing stage (an upstream stage that is fine
may legitimately be cached). Prints a Markdown table and the number of
cases whose error is unclear or that wrote something.

Usage: scripts/reliability/bad_input.py [--base DIR]   (needs pyarrow for the Parquet cases)
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from kill9 import ROOT, print_table, pipeline_bin, write_user_runs  # noqa: E402

DELPHES = ROOT / "data/delphes/dijet13_normal_tiny.root"


def convert(path, extra=""):
    return f"""name: bad
stages:
  events:
    kind: delphes_convert
    params:
      files: [{{ path: {path}, label: normal }}]{extra}
"""


USER = """name: bad
stages:
  hists:
    kind: read_parquet
    params: {{ path: {path} }}
  reference:
    kind: dinamo_s
    inputs: [hists]
    params: {{ alpha: 0.5, threshold: 1.0, historical_runs: 10 }}
"""

SYNTH = "  runs:\n    kind: synth_runs\n    params: { seeds: [1], n_runs: 300, n_bad: 30 }\n"
AGENT = SYNTH + """  agent:
    kind: rl_train
    inputs: [runs]
    params: { env: { warmup_runs: 100 }, ppo: { rollout_steps: 64, envs: 1, hidden: [16] } }
"""


def other_architecture_models(d: Path) -> Path:
    """A real `rl_train` models table whose card then claims another network
    (two hidden layers of 32 where the weights hold one of 16): a model
    file from another architecture than the one it is used as."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = d / "train"
    work.mkdir()
    (work / "p.yaml").write_text("name: train\nstages:\n" + AGENT)
    subprocess.run([pipeline_bin(), "run", "p.yaml", "--workdir", "w"], cwd=work, check=True,
                   capture_output=True, timeout=600)
    table = pq.read_table(next((work / "w/pipelines/train/agent/models").glob("*.parquet")))
    cards = []
    for text in table.column("card").to_pylist():
        card = json.loads(text)
        card["ppo"]["hidden"] = [32, 32]
        cards.append(json.dumps(card))
    table = table.set_column(table.schema.get_field_index("card"), "card", pa.array(cards))
    path = d / "other_architecture.parquet"
    pq.write_table(table, path)
    return path


DQM_READER = ROOT / "data/dqm/reader"
CSV_HEADER = "fromrun,fromlumi,hname,metype,histo,entries,Xmin,Xmax,Xbins,Ymin,Ymax,Ybins\n"


def dqm_stage(kind, params, more=""):
    return f"name: bad\nstages:\n  dqm:\n    kind: {kind}\n    params: {params}\n{more}"


def dqm_files(data: Path):
    """The real-DQM-data cases (issue 28): histogram files, per-LS tables,
    certification and luminosity files."""
    raw = (DQM_READER / "DQM_V0001_R000355100__ZeroBias__Run2022C-Example__DQMIO.root").read_bytes()
    (data / "DQM_truncated.root").write_bytes(raw[: len(raw) * 2 // 3])
    row = '355100,{ls},Hcal/occ,3,"{histo}",6,0,3,{bins},0,0,0\n'
    (data / "no_histo.csv").write_text(CSV_HEADER.replace(",histo", ",contents") + row.format(ls=1, histo="[0, 1, 2, 3, 0]", bins=3))
    (data / "not_numbers.csv").write_text(CSV_HEADER + row.format(ls=1, histo="[0, 1, x, 3, 0]", bins=3))
    (data / "binnings.csv").write_text(CSV_HEADER + row.format(ls=1, histo="[0, 1, 2, 3, 0]", bins=3)
                                      + row.format(ls=2, histo="[0, 1, 2, 0]", bins=2))
    (data / "twice.csv").write_text(CSV_HEADER + 2 * row.format(ls=1, histo="[0, 1, 2, 3, 0]", bins=3))
    (data / "list.json").write_text("[[355100, 1, 10]]\n")
    (data / "backwards.json").write_text('{"355100": [[10, 1]]}\n')
    (data / "lumi.csv").write_text("#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source\n"
                                   "355100:8000,1:1,01/01/26 00:00:00,STABLE BEAMS,6800,abc,0.1,30,HFOC\n")
    reader = f"{{ files: \"{DQM_READER}/*.root\", mes: [\"Nope/**\"] }}"
    hcal = ("  maps:\n    kind: maps_from_dqm\n    inputs: [dqm]\n    params: { mes: [Hcal/DigiTask/Occupancy/depth/depth1], "
            "events_me: Hcal/DigiTask/Occupancy/depth/depth2, iphi: 36 }\n")
    runs = "  runs:\n    kind: runs_from_dqm\n    inputs: [dqm]\n    params: { me: Hcal/nope }\n"
    return [
        ("DQM files without a matching ME", dqm_stage("dqm_root", reader), ["dqm", "Nope/**"]),
        ("truncated DQM ROOT file", dqm_stage("dqm_root", f"{{ files: {data / 'DQM_truncated.root'} }}"), ["dqm", "DQM_truncated.root"]),
        ("per-LS table without its contents column", dqm_stage("dqm_dataframe", f"{{ files: {data / 'no_histo.csv'} }}"), ["dqm", "no_histo.csv", "histo"]),
        ("contents string that is not numbers", dqm_stage("dqm_dataframe", f"{{ files: {data / 'not_numbers.csv'} }}"), ["dqm", "not_numbers.csv", "x"]),
        ("one ME with two binnings across LS", dqm_stage("dqm_dataframe", f"{{ files: {data / 'binnings.csv'} }}"), ["dqm", "binnings.csv", "Hcal/occ", "binning"]),
        ("duplicate (run, LS, ME)", dqm_stage("dqm_dataframe", f"{{ files: {data / 'twice.csv'} }}"), ["dqm", "twice.csv", "Hcal/occ", "twice"]),
        ("JSON that is not the CMS format", dqm_stage("cms_json", f"{{ file: {data / 'list.json'} }}"), ["dqm", "list.json"]),
        ("CMS JSON range backwards", dqm_stage("cms_json", f"{{ file: {data / 'backwards.json'} }}"), ["dqm", "backwards.json", "355100"]),
        ("luminosity CSV with a bad number", dqm_stage("brilcalc_lumi", f"{{ files: {data / 'lumi.csv'} }}"), ["dqm", "lumi.csv", "delivered"]),
        ("HCAL occupancy with another iφ binning", dqm_stage("dqm_dataframe", f"{{ files: {DQM_READER / 'perls.csv'} }}", hcal), ["maps", "Hcal/DigiTask/Occupancy/depth/depth1", "iφ"]),
        ("DINAMO ME not in the histograms", dqm_stage("dqm_dataframe", f"{{ files: {DQM_READER / 'perls.csv'} }}", runs), ["runs", "Hcal/nope"]),
    ]


def cases(d: Path):
    """(name, yaml, what the message must name) for every case; the first
    name is the failing stage."""
    data = d / "data"
    data.mkdir()
    raw = DELPHES.read_bytes()
    (data / "truncated.root").write_bytes(raw[: len(raw) // 3])
    (data / "header.root").write_bytes(raw[:4] + bytes(b ^ 0xFF for b in raw[4:64]) + raw[64:])
    middle = bytearray(raw)
    for i in range(len(raw) // 2, len(raw) // 2 + 4096):
        middle[i] ^= 0x5A
    (data / "baskets.root").write_bytes(bytes(middle))
    (data / "empty.root").write_bytes(b"")
    (data / "text.root").write_text("this is not a ROOT file\n")
    shutil.copy(DELPHES, data / "good.root")
    synth = "  runs:\n    kind: synth_runs\n    params: { seeds: [1], n_runs: 50, n_bad: 5 }\n"
    write_user_runs(data / "nan.parquet", bad_value=float("nan"))
    write_user_runs(data / "inf.parquet", bad_value=float("inf"))
    write_user_runs(data / "negative.parquet", bad_value=-5.0)
    write_user_runs(data / "string_counts.parquet", counts_type="string")
    write_user_runs(data / "string_runs.parquet", run_type="string")
    models = other_architecture_models(d)
    dqm = dqm_files(data)
    return dqm + [
        ("truncated ROOT file", convert(data / "truncated.root"), ["events", "truncated.root"]),
        ("ROOT header bytes flipped", convert(data / "header.root"), ["events", "header.root"]),
        ("ROOT baskets corrupted", convert(data / "baskets.root"), ["events", "baskets.root"]),
        ("empty file", convert(data / "empty.root"), ["events", "empty.root"]),
        ("text file named .root", convert(data / "text.root"), ["events", "text.root"]),
        ("missing file", convert(data / "nope.root"), ["events", "nope.root"]),
        ("missing branch", convert(data / "good.root", "\n      met_features: [NOPE]"), ["events", "NOPE"]),
        ("YAML typo in a parameter", f"name: bad\nstages:\n{synth.replace('n_runs', 'n_rns')}", ["runs", "n_rns"]),
        ("unknown stage kind", "name: bad\nstages:\n  runs:\n    kind: synth_rusn\n", ["runs", "synth_rusn"]),
        ("cycle", "name: bad\nstages:\n  a:\n    kind: union\n    inputs: [b]\n  b:\n    kind: union\n    inputs: [a]\n", ["a", "cycle"]),
        ("missing input", "name: bad\nstages:\n  s:\n    kind: dinamo_s\n    inputs: [nothing]\n", ["s", "nothing"]),
        ("wrong input table for a stage", f"name: bad\nstages:\n{synth}  w:\n    kind: sliding_windows\n    inputs: [runs]\n", ["w", "event_id", "runs.main"]),
        ("schema mismatch in union", f"name: bad\nstages:\n{synth}  m:\n    kind: dqm_metrics\n    inputs: [s]\n  s:\n    kind: dinamo_s\n    inputs: [runs]\n    params: {{ historical_runs: 20 }}\n  u:\n    kind: union\n    inputs: [runs, m]\n", ["u"]),
        ("window larger than a block", f"name: bad\nstages:\n  events:\n    kind: delphes_convert\n    params:\n      files: [{{ path: {data / 'good.root'}, label: normal }}]\n  w:\n    kind: sliding_windows\n    inputs: [events]\n    params: {{ window: 100000 }}\n", ["w", "window"]),
        ("negative reward cost", f"name: bad\nstages:\n{synth}  a:\n    kind: rl_train\n    inputs: [runs]\n    params: {{ env: {{ rewards: {{ shifter_call: -1 }} }} }}\n", ["a", "shifter_call"]),
        ("unknown policy name", f"name: bad\nstages:\n{synth}  a:\n    kind: rl_train\n    inputs: [runs]\n  e:\n    kind: rl_evaluate\n    inputs: [a.models, runs]\n    params: {{ policies: [agent, ask_always] }}\n", ["e", "ask_always"]),
        ("threshold not a number", f"name: bad\nstages:\n{synth}  s:\n    kind: dinamo_s\n    inputs: [runs]\n    params: {{ threshold: high }}\n", ["s", "threshold"]),
        ("NaN in a user's histogram counts", USER.format(path=data / "nan.parquet"), ["reference", "run 25", "NaN"]),
        ("inf in a user's histogram counts", USER.format(path=data / "inf.parquet"), ["reference", "run 25"]),
        ("negative histogram count", USER.format(path=data / "negative.parquet"), ["reference", "run 25"]),
        ("counts of the wrong type in Parquet (strings)", USER.format(path=data / "string_counts.parquet"), ["reference", "counts"]),
        ("run numbers of the wrong type in Parquet (strings)", USER.format(path=data / "string_runs.parquet"), ["reference", "run"]),
        ("model of another architecture", f"name: bad\nstages:\n{SYNTH}  models:\n    kind: read_parquet\n    params: {{ path: {models} }}\n  e:\n    kind: rl_evaluate\n    inputs: [models, runs]\n", ["e", "models", "shape"]),
        ("a runs table where a models table goes", f"name: bad\nstages:\n{synth}  e:\n    kind: rl_evaluate\n    inputs: [runs, runs]\n", ["e", "card", "runs.main"]),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="/tmp/dqm-bad-input")
    args = ap.parse_args()
    base = Path(args.base)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    binary = pipeline_bin()
    rows, bad = [], 0
    for i, (name, yaml, must_name) in enumerate(cases(base)):
        d = base / f"case{i:02d}"
        d.mkdir()
        (d / "p.yaml").write_text(yaml)
        out = subprocess.run([binary, "run", "p.yaml", "--workdir", "w"], cwd=d,
                             capture_output=True, text=True, timeout=600)
        err = out.stderr.strip()
        message = next((l for l in err.splitlines() if l.startswith("error")), err.splitlines()[-1] if err else "")
        full = err.replace("\n", " ")
        named = all(n in full for n in must_name)
        # Nothing of the failing stage may exist: no cache entry, no staging.
        failing = must_name[0]
        written = [m for m in (d / "w/cache").glob("*/manifest.json")
                   if json.loads(m.read_text())["stage"] == failing]
        tmp = d / "w/tmp"
        staging = list(tmp.iterdir()) if tmp.is_dir() else []
        ok = out.returncode != 0 and named and not written and not staging
        bad += not ok
        rows.append((name, out.returncode, message[:220], "yes" if named else "NO",
                     len(written) + len(staging)))
    print_table(["case", "exit", "message (first line)", "names stage and file/field", "written"], rows)
    print(f"\nunclear or partial: {bad} of {len(rows)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
