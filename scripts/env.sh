# Sourced by the other scripts: where the toolchain pieces live.
# The PyTorch virtualenv sits outside the clone so reruns and CI reuse it.
DQM_VENV="${DQM_VENV:-$HOME/.cache/dqm-pipeline/torch-venv}"
TORCH_VERSION=2.11.0
TORCH_SITE="$("$DQM_VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null || true)"
export LIBTORCH="$TORCH_SITE/torch"
