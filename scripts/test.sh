#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs libtorch if needed
# (same virtualenv as setup.sh), checks formatting and lints, runs `cargo test`,
# then the Slurm integration tests on a local one-node cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
DQM_BUILD=none scripts/setup.sh
source scripts/env.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
cargo test --locked --manifest-path vendor/oxyroot/Cargo.toml --lib
# The batch-submission tests against a real (local, one-node) Slurm cluster.
if [ "${DQM_TEST_SLURM:-1}" = 0 ]; then
  echo "test: DQM_TEST_SLURM=0: the Slurm integration tests (tests/slurm.rs) were NOT run" >&2
else
  scripts/test-slurm.sh
fi
