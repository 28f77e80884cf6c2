# Sourced by the other scripts: where the toolchain pieces live.
# The PyTorch virtualenv and the build cache sit outside the clone, so
# `scripts/setup.sh`, `scripts/test.sh`, CI and every clone on the machine
# share one build of the dependencies instead of compiling them again.
DQM_VENV="${DQM_VENV:-$HOME/.cache/dqm-pipeline/torch-venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dqm-pipeline/target}"
TORCH_VERSION=2.11.0
TORCH_SITE="$("$DQM_VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null || true)"
export LIBTORCH="$TORCH_SITE/torch"
