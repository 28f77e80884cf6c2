#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs libtorch if needed
# (same virtualenv as setup.sh), checks formatting and lints, runs `cargo test`,
# then the Slurm integration tests on a local one-node cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
DQM_BUILD=none scripts/setup.sh
source scripts/env.sh
# The vendored oxyroot keeps its upstream formatting (its rustfmt.toml) and
# lints; its unit tests run with everything else below.
cargo fmt --all -- --check
cargo clippy --workspace --exclude oxyroot --all-targets --locked -- -D warnings
# Same profile, features and target directory as `scripts/setup.sh`: the
# dependencies it built are reused, only the test targets are compiled.
cargo test --workspace --locked "$@"
# The batch-submission tests against a real (local, one-node) Slurm cluster.
if [ "${DQM_TEST_SLURM:-1}" = 0 ]; then
  echo "test: DQM_TEST_SLURM=0: the Slurm integration tests (tests/slurm.rs) were NOT run" >&2
else
  scripts/test-slurm.sh
fi
