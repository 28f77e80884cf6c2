#!/usr/bin/env bash
# Runs the Slurm integration tests (tests/slurm.rs) against a real one-node
# Slurm cluster started on this machine (scripts/slurm/start-slurm.sh:
# installs Slurm 22.05 and munge from Debian if missing; needs root), and
# stops the daemons it started, by PID, when done, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# Starting daemons and installing packages needs root (or password-less sudo).
as_root=()
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then
    as_root=(sudo -n --preserve-env=SLURM_RUN_DIR)
  else
    echo "test-slurm: the Slurm tests need root or password-less sudo to start a local cluster (DQM_TEST_SLURM=0 skips them explicitly)" >&2
    exit 1
  fi
fi
export SLURM_RUN_DIR="${SLURM_RUN_DIR:-/tmp/dqm-slurm}"
# Daemons already running (started by someone else) are left alone by
# start-slurm.sh, and stop-slurm.sh stops only what start-slurm.sh recorded.
"${as_root[@]}" bash scripts/slurm/start-slurm.sh
trap '"${as_root[@]}" bash scripts/slurm/stop-slurm.sh' EXIT
cargo test --locked --test slurm -- --ignored --test-threads 1 "$@"
