#!/usr/bin/env bash
# Create .venv-tfmot, the separate environment of the tfmot side-by-side baseline.
#
# The library itself never imports tensorflow_model_optimization or tf_keras: tfmot only
# works with Keras 2 (tf_keras, selected by TF_USE_LEGACY_KERAS=1), so the baseline runs
# in its own process and its own virtual environment, created here.
#
# Idempotent: when the venv already imports tensorflow, tf_keras and tfmot, nothing is done.
#
# Usage (from anywhere):  bash benchmarks/setup_tfmot_venv.sh
# Environment overrides:  PYTHON (default python3.11), TFMOT_VENV (default <repo>/.venv-tfmot)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
VENV="${TFMOT_VENV:-$REPO_ROOT/.venv-tfmot}"
PY="$VENV/bin/python"

check() {
  TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=3 "$PY" - <<'PY' >/dev/null 2>&1
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
import tf_keras
import tensorflow_model_optimization as tfmot
assert tf.__version__.startswith("2.21."), tf.__version__
assert tf_keras.__version__.startswith("2.21."), tf_keras.__version__
assert tfmot.__version__ == "0.8.1", tfmot.__version__
PY
}

if [ -x "$PY" ] && check; then
  echo "tfmot venv already set up: $VENV"
  exit 0
fi

echo "creating tfmot venv in $VENV with $PYTHON"
"$PYTHON" -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q \
  "tensorflow==2.21.*" \
  "tf-keras==2.21.*" \
  "tensorflow-model-optimization==0.8.1"

if check; then
  TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c \
    "import tensorflow as tf, tf_keras, tensorflow_model_optimization as m; \
print('tfmot venv ready: tensorflow', tf.__version__, 'tf_keras', tf_keras.__version__, \
'tfmot', m.__version__)"
else
  echo "tfmot venv was installed but does not import; see the messages above" >&2
  TF_USE_LEGACY_KERAS=1 "$PY" -c "import tensorflow, tf_keras, tensorflow_model_optimization" >&2
  exit 1
fi
