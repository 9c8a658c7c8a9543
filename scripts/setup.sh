#!/usr/bin/env bash
# Set up rnnkit in ./.venv: create the virtual environment, install PyTorch, install rnnkit.
#   bash scripts/setup.sh          the library and the `rnnkit` command
#   bash scripts/setup.sh --dev    plus the test tools (pytest, hypothesis, ruff, every optional
#                                  extra; as root, Debian's chromium, timidity and freepats for
#                                  the browser and audio tests)
# PyTorch: with an NVIDIA GPU, the default build from the package index; without one, the CPU
# build (a local CPU wheel when pip's find-links offers one, else PyTorch's CPU index), which
# avoids downloading several GB of CUDA libraries that would never be used.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
venv_python=.venv/bin/python

if ! "$venv_python" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing the default (CUDA) PyTorch build"
    "$venv_python" -m pip install "torch>=2.2"
  elif "$venv_python" -m pip install --no-index --no-deps "torch==2.13.0" >/dev/null 2>&1; then
    echo "setup: no GPU: installed the local CPU wheel of PyTorch 2.13.0"
  else
    echo "setup: no GPU: installing the CPU build of PyTorch"
    "$venv_python" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

extras=""
if [ "${1:-}" = "--dev" ]; then
  extras="[dev]"
  # System programs the tests drive: Debian's Chromium for the playground's browser test (no
  # browser download at run time), timidity + freepats for the MIDI -> WAV test of the music task.
  packages=""
  command -v chromium >/dev/null 2>&1 || packages=" chromium"
  command -v timidity >/dev/null 2>&1 || packages="$packages timidity freepats"
  if [ -n "$packages" ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      echo "setup: installing Debian's$packages for the browser and audio tests"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages) >/dev/null \
        || echo "setup: could not install$packages; the tests that need them will be skipped"
    else
      echo "setup: not root: install Debian's$packages by hand to run the browser and audio tests"
    fi
  fi
fi
"$venv_python" -m pip install --quiet -e ".${extras}"
echo "setup: done ($("$venv_python" -c 'import torch, rnnkit; print("rnnkit", rnnkit.__version__, "torch", torch.__version__)'))"
