#!/usr/bin/env bash
# The transformers 4.57 leg of the CLIP data-method tests (issue #23).
#
# fusionbench-vision admits transformers>=4.57,<6. Under 5.x CLIPVisionModel is flat (parameters
# `encoder.…`), under 4.x it nests the tower (`vision_model.encoder.…`); the pool's tensors keep
# checkpoint names under both, and methods pair them through fusionbench_core.naming. The main
# .venv has 5.x; this script builds a separate venv with 4.57 and runs the same tests there.
#
#   bash benchmarks/clip_data_methods_tf457.sh                 # set up (first time), then test
#   bash benchmarks/clip_data_methods_tf457.sh --setup-only    # only create/refresh the venv
#   bash benchmarks/clip_data_methods_tf457.sh fusionbench_vision/tests/test_clip_lora.py   # other tests
#
# TF457_VENV picks the venv's folder (default /tmp/tf457); REINSTALL=1 reinstalls into it. torch is
# pinned to 2.13.0 in the same pip command, or pip resolves a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${TF457_VENV:-/tmp/tf457}"
PYTHON="${PYTHON:-python3}"

SETUP_ONLY=0
if [ "${1:-}" = "--setup-only" ]; then
  SETUP_ONLY=1
  shift
fi

if [ ! -x "$VENV/bin/python" ] || [ "${REINSTALL:-0}" = 1 ] || [ "$SETUP_ONLY" = 1 ]; then
  echo "==> $VENV: transformers 4.57, torch 2.13.0 (CPU) and the packages the CLIP tests use" >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0 'transformers==4.57.*' \
    -e "$ROOT/fusionbench_core[testing]" -e "$ROOT/fusionbench_vision[lora]" \
    -e "$ROOT/plugins/fusionbench_data_methods" -e "$ROOT/plugins/fusionbench_methods" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
fi
version="$("$VENV/bin/python" -c 'import transformers; print(transformers.__version__)')"
case "$version" in
  4.57*) echo "==> transformers $version" >&2 ;;
  *) echo "Error: $VENV has transformers $version, not 4.57 (REINSTALL=1 to rebuild it)" >&2; exit 1 ;;
esac
[ "$SETUP_ONLY" = 1 ] && exit 0

cd "$ROOT"
if [ "$#" -eq 0 ]; then
  set -- fusionbench_vision/tests/test_clip_data_methods.py
fi
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" exec "$VENV/bin/python" -m pytest -q "$@"
