#!/usr/bin/env python3
"""Disk full: a pipeline run on a workdir that is a small tmpfs must fail
with a clear error naming the stage and the path, leave no partial output,
and succeed once space is freed, with outputs identical to a run that never
ran out.

For each size (the workdir fills up in a different stage each time):
mount a tmpfs of that size, run, check the failure (non-zero exit, "No space
left on device", the stage named, a path named), check every cache entry is
complete and `tmp/` is empty, grow the tmpfs (`mount -o remount,size=`),
rerun, and compare every output file with a reference run's.

Needs root (mount). Usage: scripts/reliability/disk_full.py
[--pipeline FILE] [--sizes 1M 2M ...] [--base DIR]
"""

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from kill9 import ROOT, print_table, check_entries, command, digests, pipeline_bin, pipeline_name  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default="pipelines/lumi_certification.yaml")
    ap.add_argument("--sizes", nargs="*", default=["64k", "1M", "2M", "3M", "5M", "9M", "13M"])
    ap.add_argument("--base", default="/tmp/dqm-disk-full")
    args = ap.parse_args()
    binary, file = pipeline_bin(), args.pipeline
    name = pipeline_name(file)
    base = Path(args.base)
    base.mkdir(parents=True, exist_ok=True)
    ref = base / "ref"
    subprocess.run(["rm", "-rf", str(ref)], check=True)
    subprocess.run(command(binary, file, [], ref), cwd=ROOT, check=True, capture_output=True)
    reference = digests(ref, name)
    rows, failures = [], 0
    for size in args.sizes:
        mnt = base / f"tmpfs-{size}"
        mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
        try:
            out = subprocess.run(command(binary, file, [], mnt), cwd=ROOT,
                                 capture_output=True, text=True)
            err = out.stderr.strip().splitlines()
            message = next((l for l in err if l.startswith("error:")), err[-1] if err else "")
            clear = ("No space left on device" in out.stderr and "stage `" in message
                     and str(mnt) in out.stderr)
            problems = check_entries(mnt)
            tmp = mnt / "tmp"
            leftovers = list(tmp.iterdir()) if tmp.is_dir() else []
            subprocess.run(["mount", "-o", "remount,size=512M", str(mnt)], check=True)
            again = subprocess.run(command(binary, file, [], mnt), cwd=ROOT,
                                   capture_output=True, text=True)
            same = again.returncode == 0 and digests(mnt, name) == reference
            ok = out.returncode != 0 and clear and not problems and not leftovers and same
            failures += not ok
            rows.append((size, out.returncode, message[:160], len(problems), len(leftovers),
                         "identical" if same else "DIFFERENT or failed"))
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    print_table(["tmpfs", "exit", "message", "partial entries", "left in tmp/", "after freeing space"], rows)
    print(f"violations: {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
