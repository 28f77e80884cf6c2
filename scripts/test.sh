#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs libtorch if needed
# (same virtualenv as setup.sh), checks formatting, then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
DQM_BUILD=none scripts/setup.sh
source scripts/env.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
cargo test --locked --manifest-path vendor/oxyroot/Cargo.toml --lib
