#!/usr/bin/env bash
# Set up FusionBench on a fresh machine: the .venv at the repository root with every package of the
# monorepo installed editable (torch pinned to the local CPU wheel), then the offline data sources.
#
#   scripts/setup.sh              # everything
#   scripts/setup.sh --no-data    # packages only (no apt/npm data sources)
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_DATA=1
for arg in "$@"; do
  case "$arg" in
    --no-data) WITH_DATA=0 ;;
    *) echo "setup.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

# Every member of the monorepo that has a pyproject.toml, core first (with Ray, for the test of
# `fb sweep --executor ray`: a 79 MB wheel, about 15 s to install).
packages=(-e "./fusionbench_core[testing,ray]")
for dir in plugins/*/ fusionbench_vision/ fusionbench_nlp/ examples/*/; do
  [ -f "$dir/pyproject.toml" ] && packages+=(-e "./${dir%/}")
done

echo "==> installing $(( ${#packages[@]} / 2 )) editable packages (torch==2.13.0, CPU)"
# torch is pinned in the same command, or pip would resolve a multi-GB CUDA build.
python -m pip install -q --disable-pip-version-check torch==2.13.0 "${packages[@]}" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
python -m pip check >/dev/null 2>&1 || python -m pip check | grep -v "^No broken" >&2 || true

if [ "$WITH_DATA" = 1 ]; then
  echo "==> installing the offline data sources"
  PYTHON=python bash scripts/install-offline-data.sh
fi
# Headless Chromium for the browser test of `fb report` (docs/experiments.md); skipped when installed.
# Under CI that test fails without it; locally it skips.
if [ "$WITH_DATA" = 1 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing chromium (browser test of fb report)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium; } \
    >/dev/null 2>&1 || echo "setup.sh: could not install chromium; the fb report browser test will skip (fail under CI)" >&2
fi
echo "==> ready: . .venv/bin/activate && fb --help"
