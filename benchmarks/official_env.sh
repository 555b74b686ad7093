#!/usr/bin/env bash
# Build the OFFICIAL LanguageBind code's own environment for benchmarks/bench_official.py.
#
#   benchmarks/official_env.sh [ENV_DIR] [OFFICIAL_CHECKOUT]
#
# ENV_DIR (default build/official-env) gets a venv with the official code's pins (its requirements.txt
# and README: torch 2.0.1, torchvision 0.15.2, torchaudio 2.0.2, transformers 4.30.2, tokenizers 0.13.3,
# peft 0.4.0, einops 0.6.1, ...), and
# OFFICIAL_CHECKOUT (default ENV_DIR/LanguageBind) a checkout of github.com/PKU-YuanGroup/LanguageBind at
# a fixed commit (the repository's newest when this was written). An existing checkout is used as it is (offline
# machines: clone it elsewhere and pass its path). Nothing of lbedge is installed there, and nothing of the
# official code is copied into lbedge.
#
# torch comes from PyTorch's CPU index when that is reachable, else from PyPI (the CUDA build: a few GB,
# which runs on CPUs all the same).
set -euo pipefail

ENV_DIR=${1:-build/official-env}
OFFICIAL=${2:-$ENV_DIR/LanguageBind}
OFFICIAL_REPO=https://github.com/PKU-YuanGroup/LanguageBind
OFFICIAL_COMMIT=7070c53375661cdb235801176b564b45f96f0648
PYTHON=${PYTHON:-python3}

# The official pins, except where a pin has no wheel for Python 3.11 (numpy 1.23.0, scikit-learn 1.3.0 and
# scipy 1.10.1 are not needed by the models; numpy 1.24 is the oldest with 3.11 wheels that torch 2.0 takes).
# peft is pinned in the official requirements to a git commit from 2023-07 that became release 0.4.0.
PINS=(
  "torch==2.0.1"
  "torchvision==0.15.2"
  "torchaudio==2.0.2"
  "transformers==4.30.2"
  "tokenizers==0.13.3"
  "peft==0.4.0"
  "accelerate==0.20.3"
  "einops==0.6.1"
  "ftfy==6.1.1"
  "numpy==1.24.4"
  "opencv-python==4.7.0.72"
  "decord==0.6.0"
  "safetensors==0.3.1"
  "soundfile==0.12.1"
)

if [ ! -x "$ENV_DIR/bin/python" ]; then
  "$PYTHON" -m venv "$ENV_DIR"
fi
PIP=("$ENV_DIR/bin/python" -m pip install --disable-pip-version-check --constraint /dev/null)
if ! "${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu --timeout 20 "torch==2.0.1" 2>/dev/null; then
  echo "PyTorch's CPU index is not reachable: torch 2.0.1 comes from PyPI (CUDA build)" >&2
fi
"${PIP[@]}" "${PINS[@]}"

if [ ! -d "$OFFICIAL/languagebind" ]; then
  git clone "$OFFICIAL_REPO" "$OFFICIAL"
  git -C "$OFFICIAL" checkout -q "$OFFICIAL_COMMIT"
fi
echo "official environment: $ENV_DIR/bin/python, official code: $OFFICIAL"
