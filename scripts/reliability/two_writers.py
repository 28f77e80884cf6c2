#!/usr/bin/env python3
"""Two writers on one workdir: while a `pipeline run` holds it, a second
`run` and a batch job (`run-stage`) fail at once with a message naming the
holder, and the first run finishes untouched; batch jobs of one stage's
shards run side by side (shared lock) and exactly one of them assembles the
output. Outputs are compared byte for byte with a lone run's.

Usage: scripts/reliability/two_writers.py [--base DIR]
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from kill9 import ROOT, check_entries, command, digests, pipeline_bin, pipeline_name  # noqa: E402

LONG = "pipelines/lumi_certification.yaml"
SHARDED = "pipelines/dinamo_s_study.yaml"
SMALL_STUDY = ["runs.seed_range=[0, 32]", "runs.n_runs=2000", "runs.n_bad=200",
               "reference.historical_runs=400"]


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="/tmp/dqm-two-writers")
    args = ap.parse_args()
    binary, base = pipeline_bin(), Path(args.base)
    subprocess.run(["rm", "-rf", str(base)], check=True)
    checks = []

    # 1. A run holds the workdir; a second run and a batch job are refused.
    ref, shared = base / "ref", base / "shared"
    assert run(command(binary, LONG, [], ref)).returncode == 0
    first = subprocess.Popen(command(binary, LONG, [], shared), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    t = time.time()
    second = run(command(binary, LONG, [], shared))
    second_s = time.time() - t
    t = time.time()
    batch = run(command(binary, LONG, [], shared, "run-stage") + ["runs"])
    batch_s = time.time() - t
    first.wait()
    checks += [
        ("second `run` refused at once", second.returncode != 0 and "in use by another pipeline run" in second.stderr and second_s < 5,
         f"exit {second.returncode} in {second_s:.2f} s: {second.stderr.strip().splitlines()[-1]}"),
        ("`run-stage` refused at once", batch.returncode != 0 and "in use by a local `pipeline run`" in batch.stderr and batch_s < 5,
         f"exit {batch.returncode} in {batch_s:.2f} s: {batch.stderr.strip().splitlines()[-1]}"),
        ("the first run finished", first.returncode == 0, f"exit {first.returncode}"),
        ("its outputs equal a lone run's", digests(shared, pipeline_name(LONG)) == digests(ref, pipeline_name(LONG)), ""),
        ("no partial entry", not check_entries(shared), str(check_entries(shared))),
    ]

    # 2. Batch jobs of every shard at once (as a Slurm array would start them).
    ref2, jobs = base / "study-ref", base / "study-jobs"
    assert run(command(binary, SHARDED, SMALL_STUDY, ref2)).returncode == 0
    assert run(command(binary, SHARDED, SMALL_STUDY, jobs) + ["--until", "runs"]).returncode == 0
    procs = [subprocess.Popen(command(binary, SHARDED, SMALL_STUDY, jobs, "run-stage")
                              + ["reference", "--shard", str(i)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(8)]
    outs = [p.communicate()[0] for p in procs]
    codes = [p.returncode for p in procs]
    final = run(command(binary, SHARDED, SMALL_STUDY, jobs))
    a = digests(ref2, pipeline_name(SHARDED))
    b = digests(jobs, pipeline_name(SHARDED))
    checks += [
        ("8 shard jobs side by side all succeed", all(c == 0 for c in codes), str(codes)),
        ("exactly one assembled the output", sum("assembled" in o.lower() for o in outs) <= 1,
         f"{sum('assembled' in o.lower() for o in outs)} said so"),
        ("the pipeline then completes from the cache", final.returncode == 0,
         final.stderr[-300:] if final.returncode else ""),
        ("outputs equal a local run's", a == b, f"{len(a)} files"),
        ("no partial entry", not check_entries(jobs), str(check_entries(jobs))),
    ]
    # 3. A batch job killed mid-shard (what a node failure or `scancel -s
    # KILL` does), then the job array resubmitted: the killed shard runs
    # again, the finished ones are kept, the output equals a local run's.
    killed = base / "study-killed"
    assert run(command(binary, SHARDED, SMALL_STUDY, killed) + ["--until", "runs"]).returncode == 0
    victims = 0
    for i in range(8):
        p = subprocess.Popen(command(binary, SHARDED, SMALL_STUDY, killed, "run-stage")
                             + ["reference", "--shard", str(i)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        if i % 2 == 0:
            time.sleep(0.15)
            os.killpg(p.pid, signal.SIGKILL)
            victims += 1
        p.wait()
    parts = sorted(q.name for q in (killed / "parts").glob("*/*") if (q / "part.json").is_file())
    rerun = [run(command(binary, SHARDED, SMALL_STUDY, killed, "run-stage") + ["reference", "--shard", str(i)])
             for i in range(8)]
    final = run(command(binary, SHARDED, SMALL_STUDY, killed))
    checks += [
        (f"{victims} shard jobs killed mid-shard, the others kept", len(parts) >= 8 - victims,
         f"{len(parts)} finished shards after the kills"),
        ("resubmitted jobs finish and one assembles", all(r.returncode == 0 for r in rerun), ""),
        ("outputs equal a local run's", final.returncode == 0 and digests(killed, pipeline_name(SHARDED)) == a, ""),
        ("no partial entry", not check_entries(killed), str(check_entries(killed))),
    ]

    print("| check | result | detail |")
    print("|---|---|---|")
    for name, ok, detail in checks:
        print(f"| {name} | {'ok' if ok else 'FAILED'} | {detail.replace('|', '/')[:200]} |")
    bad = sum(not ok for _, ok, _ in checks)
    print(f"violations: {bad}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
