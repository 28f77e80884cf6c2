#!/usr/bin/env bash
# Installs everything dqm-pipeline needs on a fresh machine: PyTorch 2.11.0's
# libtorch (CPU part only, ~530 MB instead of ~3 GB of CUDA wheels) into a
# virtualenv outside the clone, then builds the `pipeline` binary.
# Idempotent: a second call only checks and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

if [ ! -x "$DQM_VENV/bin/python" ]; then
  echo "setup: creating virtualenv $DQM_VENV" >&2
  python3 -m venv "$DQM_VENV"
fi
if ! "$DQM_VENV/bin/python" -c "import importlib.metadata as m; assert m.version('torch') == '$TORCH_VERSION'" 2>/dev/null; then
  echo "setup: installing torch==$TORCH_VERSION (libtorch for tch 0.24) into $DQM_VENV" >&2
  # --no-deps skips the CUDA wheels; libtorch_cpu only needs the CUDA
  # runtime and CUPTI stubs that torch 2.11.0 (CUDA 13.0) was built against.
  "$DQM_VENV/bin/pip" install --quiet --no-deps "torch==$TORCH_VERSION" \
    "nvidia-cuda-runtime==13.0.96.*" "nvidia-cuda-cupti==13.0.85.*"
fi
source scripts/env.sh
test -f "$LIBTORCH/lib/libtorch_cpu.so" || { echo "setup: no libtorch_cpu.so under $LIBTORCH/lib" >&2; exit 1; }

# DQM_BUILD=none: only the environment (scripts/test.sh builds its own way).
case "${DQM_BUILD:-dev}" in
  none) exit 0 ;;
  release) flags=(--release); dir=release ;;
  *) flags=(); dir=debug ;;
esac
echo "setup: building pipeline (${DQM_BUILD:-dev} profile)" >&2
cargo build --locked "${flags[@]}" --bin pipeline
target="$CARGO_TARGET_DIR"
mkdir -p "$HOME/.local/bin"
install -m 755 "$target/$dir/pipeline" "$HOME/.local/bin/pipeline"
echo "setup: installed $HOME/.local/bin/pipeline" >&2
