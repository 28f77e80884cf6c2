#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs libtorch if needed
# (same virtualenv as setup.sh), checks formatting and lints, runs `cargo test`,
# then the Slurm integration tests on a local one-node cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
DQM_BUILD=none scripts/setup.sh
# The report test (tests/cli.rs) opens pages in a real headless browser.
if [ -z "${DQM_CHROMIUM:-}" ] && ! command -v chromium > /dev/null; then
  echo "test: installing Debian's chromium for the report test" >&2
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium > /dev/null
fi
source scripts/env.sh
# The DQM round-trip test (tests/cli.rs) writes ROOT, CSV and Parquet files
# with an independent writer: uproot and pandas, from PyPI, in the project's
# virtualenv.
if ! "$DQM_VENV/bin/python" -c "import uproot, numpy, pandas, pyarrow" 2> /dev/null; then
  echo "test: installing uproot, numpy, pandas, pyarrow into $DQM_VENV" >&2
  "$DQM_VENV/bin/pip" install --quiet "uproot==5.7.7" "numpy==2.4.6" "pandas==3.1.1" "pyarrow==26.0.1"
fi
export DQM_PYTHON="${DQM_PYTHON:-$DQM_VENV/bin/python}"
# The vendored oxyroot keeps its upstream formatting (its rustfmt.toml) and
# lints; its unit tests run with everything else below.
cargo fmt --all -- --check
# `--features fuzz` lints the fuzz harness (src/bin/fuzz/) too, so it keeps
# compiling without being linked here.
cargo clippy --workspace --exclude oxyroot --all-targets --features dqm-pipeline/fuzz --locked -- -D warnings
# Same profile, features and target directory as `scripts/setup.sh`: the
# dependencies it built are reused, only the test targets are compiled.
cargo test --workspace --locked "$@"
# The batch-submission tests against a real (local, one-node) Slurm cluster.
if [ "${DQM_TEST_SLURM:-1}" = 0 ]; then
  echo "test: DQM_TEST_SLURM=0: the Slurm integration tests (tests/slurm.rs) were NOT run" >&2
else
  scripts/test-slurm.sh
fi
