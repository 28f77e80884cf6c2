#!/usr/bin/env python3
"""kill -9 at random moments of every stage kind, then rerun: the promise
that an interrupted `pipeline run` never leaves a partial output behind and
that finishing it gives what an uninterrupted run gives.

For each pipeline of the suite (the shipped files, some with smaller
parameters so a kill lands in every stage within minutes):
  1. an uninterrupted run in a fresh workdir (the reference), recording
     when each stage runs;
  2. in a second workdir, repeatedly: start `pipeline run`, wait until a
     stage chosen at random among those not yet finished is running, sleep
     a random part of its reference duration, `kill -9` the whole process
     group; then check that every cache entry is complete (manifest present,
     every file it lists present) and that no link points at nothing;
  3. a final uninterrupted run in that workdir (it must not be blocked by
     the killed run's lock), and every file of every stage's output (tables,
     plots, models; not the manifest, which records wall times) compared
     byte for byte with the reference.

Usage: scripts/reliability/kill9.py [--kills-per-pipeline N] [--seed S]
       [--only NAME ...] [--pipeline PATH] [--workdir DIR]
Prints one line per kill and a summary table; exits non-zero on any
violation. Needs the `pipeline` binary on PATH (scripts/setup.sh) or
$PIPELINE.
"""

import argparse
import hashlib
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (name, pipeline file, --set overrides): every stage kind of the shipped
# pipelines, at sizes that keep the whole suite within ~30 minutes on 2 cores.
SUITE = [
    ("lumi_certification", "pipelines/lumi_certification.yaml", []),
    ("rl_dqm", "pipelines/rl_dqm.yaml", ["train_runs.seed_range=[0, 16]"]),
    (
        "dinamo_compare",
        "pipelines/dinamo_compare.yaml",
        ["runs.seed_range=[0, 2]", "runs.n_runs=130", "runs.n_bad=13",
         "s.historical_runs=100", "ml.historical_runs=100", "ml.max_iterations=5"],
    ),
    ("dinamo_s_study", "pipelines/dinamo_s_study.yaml",
     ["runs.seed_range=[0, 64]", "runs.n_runs=2000", "runs.n_bad=200",
      "reference.historical_runs=400"]),
    ("medic_w30", "pipelines/medic_w30.yaml", ["model.max_epochs=4"]),
    ("hcal_occupancy", "pipelines/hcal_occupancy.yaml",
     ["model.epochs=6", "real_model.epochs=3"]),
    ("hcal_transfer", "pipelines/hcal_transfer.yaml", []),
    # `union` (the W scan's last stage, after hours of training),
    # `read_parquet` (the apply pipeline reads another pipeline's model) and
    # `alerts` (milliseconds on the sample's predictions) on inputs large
    # enough to be killed during. Written by `mini()`.
    ("kill9_mini", "MINI", []),
]

MINI = """name: kill9_mini
stages:
  user:
    kind: read_parquet
    params: {{ path: {user} }}
  user_reference:
    kind: dinamo_s
    inputs: [user]
    params: {{ alpha: 0.5, threshold: 1.0, historical_runs: 10 }}
  runs_a:
    kind: synth_runs
    params: {{ seeds: [1, 2, 3], n_runs: 3000, n_bad: 300 }}
  runs_b:
    kind: synth_runs
    params: {{ seeds: [4, 5, 6], n_runs: 3000, n_bad: 300 }}
  all_runs:
    kind: union
    inputs: [runs_a, runs_b]
  predictions:
    kind: read_parquet
    params: {{ path: {predictions} }}
  alerts:
    kind: alerts
    inputs: [predictions]
"""


def write_user_runs(path: Path, n_runs=40, n_bins=10, bad_value=None,
                    counts_type="float64", run_type="int64"):
    """A user's runs table (run, label, counts) as `read_parquet` brings it
    in for a DINAMO reference: fixed counts, every tenth run bad;
    `bad_value` goes into bin 3 of run 25; the column types can be wrong."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts = [[100.0 + (i * 7 + j * 3) % 11 for j in range(n_bins)] for i in range(n_runs)]
    if bad_value is not None:
        counts[25][3] = bad_value
    if counts_type == "string":
        counts = [[str(v) for v in row] for row in counts]
    runs = list(range(n_runs)) if run_type == "int64" else [f"run{i}" for i in range(n_runs)]
    pq.write_table(pa.table({
        "run": pa.array(runs, type=getattr(pa, run_type)()),
        "label": pa.array([int(i % 10 == 9) for i in range(n_runs)], type=pa.int8()),
        "counts": pa.array(counts, type=pa.list_(getattr(pa, counts_type)())),
    }), path)


def mini(base: Path) -> str:
    """Writes the mini pipeline and its user tables (via pyarrow); returns
    the pipeline's path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base.mkdir(parents=True, exist_ok=True)
    write_user_runs(base / "user_runs.parquet", n_runs=2000, n_bins=20)
    # Two million windows of `medic_infer`-like predictions (the columns
    # `alerts` reads), so reading them and scanning them for alerts take
    # long enough for a kill to land inside.
    n = 2_000_000
    pq.write_table(pa.table({
        "window_id": pa.array(range(n), type=pa.int64()),
        "block": pa.array(["test"] * n),
        "start": pa.array(range(n), type=pa.int64()),
        "anomaly_score": pa.array([((i * 7919) % 1000) / 1000 for i in range(n)], type=pa.float64()),
        "argmax_class": pa.array([(i // 5000) % 4 for i in range(n)], type=pa.int8()),
    }), base / "predictions.parquet")
    path = base / "kill9_mini.yaml"
    path.write_text(MINI.format(user=base / "user_runs.parquet",
                                predictions=base / "predictions.parquet"))
    return str(path)

RUNNING = re.compile(r"^\[\s*([0-9.]+)s\] (\S+)(?: \[shard \d+/\d+\])?: running \((\w+)\)")
DONE = re.compile(r"^\[\s*([0-9.]+)s\] (\S+): done")


def print_table(header, rows):
    """A Markdown table (as BENCHMARKS.md records them)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(
            f"{v:.1f}" if isinstance(v, float) else str(v).replace("|", "/") for v in r) + " |")


def pipeline_bin():
    return os.environ.get("PIPELINE") or shutil.which("pipeline") or str(
        Path.home() / ".cache/dqm-pipeline/target/debug/pipeline")


def command(binary, file, sets, workdir, verb="run"):
    cmd = [binary, verb, str(ROOT / file), "--workdir", str(workdir)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def reference_run(binary, file, sets, workdir):
    """Runs to completion; returns {stage: (kind, start, duration)}."""
    out = subprocess.run(command(binary, file, sets, workdir), cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"reference run of {file} failed:\n{out.stderr[-3000:]}")
    stages, starts = {}, {}
    for line in out.stderr.splitlines() + out.stdout.splitlines():
        if m := RUNNING.match(line):
            starts[m.group(2)] = (m.group(3), float(m.group(1)))
        elif (m := DONE.match(line)) and m.group(2) in starts:
            kind, t0 = starts[m.group(2)]
            stages[m.group(2)] = (kind, t0, float(m.group(1)) - t0)
    return stages


def check_entries(workdir):
    """Every cache entry complete, every link resolves. Returns problems."""
    problems = []
    cache = workdir / "cache"
    for entry in sorted(cache.iterdir()) if cache.is_dir() else []:
        manifest = entry / "manifest.json"
        if not manifest.is_file():
            problems.append(f"{entry.name}: no manifest (a partial entry)")
            continue
        m = json.loads(manifest.read_text())
        for out in m["outputs"]:
            for f in out["files"]:  # relative to the entry
                if not (entry / f).is_file():
                    problems.append(f"{entry.name}: {f} missing")
    for link in (workdir / "pipelines").glob("*/*"):
        if link.name.startswith("."):
            continue
        if not link.exists():
            problems.append(f"{link}: points at nothing")
    return problems


def digests(workdir, name):
    """{stage/relative path: sha256} of every output file but manifests."""
    out = {}
    for link in sorted((workdir / "pipelines" / name).iterdir()):
        if link.name.startswith("."):
            continue
        entry = link.resolve()
        for f in sorted(entry.rglob("*")):
            if f.is_file() and f.name != "manifest.json":
                rel = f"{link.name}/{f.relative_to(entry)}"
                out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def pipeline_name(file):
    for line in (ROOT / file).read_text().splitlines():
        if line.startswith("name:"):
            return line.split(":", 1)[1].strip()
    sys.exit(f"{file}: no name")


def kill_during(binary, file, sets, workdir, stage, delay, extra=(), timeout=900):
    """Starts a run (with `extra` arguments), kills it `delay` s after
    `stage` starts running. Returns the stages running at the kill, or None
    if the run ended first."""
    proc = subprocess.Popen(command(binary, file, sets, workdir) + list(extra), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout],
                     daemon=True).start()
    running, started_at = set(), None
    deadline = time.time() + timeout
    while time.time() < deadline:
        while not lines.empty():
            line = lines.get()
            if m := RUNNING.match(line):
                running.add(m.group(2))
                if m.group(2) == stage and started_at is None:
                    started_at = time.time()
            elif m := DONE.match(line):
                running.discard(m.group(2))
        if started_at is not None and time.time() - started_at >= delay:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return sorted(running)
        if proc.poll() is not None:
            return None
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return sorted(running)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills-per-pipeline", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--workdir", default="/tmp/dqm-kill9")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    binary = pipeline_bin()
    base = Path(args.workdir)
    shutil.rmtree(base, ignore_errors=True)
    summary, kinds_killed, failures = [], {}, 0
    for name, file, sets in SUITE:
        if args.only and name not in args.only:
            continue
        if file == "MINI":
            file = mini(base / "mini")
        ref, work = base / f"{name}-ref", base / f"{name}-killed"
        t0 = time.time()
        stages = reference_run(binary, file, sets, ref)
        if not stages:
            sys.exit(f"{name}: no stage seen running in the reference run's log")
        ref_time = time.time() - t0
        kills, misses = 0, 0
        for _ in range(args.kills_per_pipeline):
            plan = subprocess.run(command(binary, file, sets, work, "plan"),
                                  cwd=ROOT, capture_output=True, text=True).stdout
            # "<stage> [<kind>] cached" for the finished ones.
            pending = [s for s in stages if not re.search(
                rf"^{re.escape(s)} \[\w+\] cached", plan, re.M)]
            # Aim at the stage kinds killed least so far (every kind gets its
            # kills, not just the long stages); a finished stage is forced to
            # run again (with what depends on it), so kills also land while a
            # cached entry is being replaced.
            fewest = min(kinds_killed.get(k, 0) for k, _, _ in stages.values())
            stage = rng.choice([c for c, (k, _, _) in stages.items()
                                if kinds_killed.get(k, 0) == fewest])
            force = [] if stage in pending else ["--force", stage]
            kind, _, duration = stages[stage]
            delay = rng.uniform(0, max(duration, 0.05) * 0.9)
            running = kill_during(binary, file, sets, work, stage, delay, extra=force)
            problems = check_entries(work)
            if running is None:
                misses += 1
                print(f"{name}: run ended before the kill (stage {stage})")
            else:
                kills += 1
                for s in running:
                    k = stages.get(s, ("?",))[0]
                    kinds_killed[k] = kinds_killed.get(k, 0) + 1
                print(f"{name}: kill -9 {delay:.2f} s into {stage} ({kind}); "
                      f"running: {', '.join(running) or '-'}; "
                      f"{'entries complete' if not problems else problems}")
            if problems:
                failures += 1
        final = subprocess.run(command(binary, file, sets, work), cwd=ROOT,
                               capture_output=True, text=True)
        if final.returncode != 0:
            failures += 1
            print(f"{name}: the rerun failed:\n{final.stderr[-2000:]}")
            continue
        leftovers = list((work / "tmp").iterdir()) if (work / "tmp").is_dir() else []
        a, b = digests(ref, pipeline_name(file)), digests(work, pipeline_name(file))
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if differ or leftovers:
            failures += 1
        summary.append((name, len(stages), kills, misses, len(a), len(differ),
                        len(leftovers), ref_time))
        print(f"{name}: rerun ok; {len(a)} files, {len(differ)} differ "
              f"{differ[:5]}; {len(leftovers)} left in tmp/")
    print()
    print_table(["pipeline", "stages", "kills", "runs ended first", "output files",
                 "differing", "left in tmp/", "reference run (s)"], summary)
    print(f"\nkills landing in each stage kind (stages running at the kill): "
          f"{json.dumps(dict(sorted(kinds_killed.items())))}")
    print(f"violations: {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
