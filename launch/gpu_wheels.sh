#!/usr/bin/env bash
# Builds .whl/: the pure-Python packages that launch/gpu_vgg16.sh needs on a
# GPU machine that has Python 3.12 with jax, flax, optax, orbax-checkpoint,
# absl-py, etils, pillow and matplotlib but no ml_collections, no clu, no
# TensorFlow and no network. Run it here (where pip reaches the package index),
# then carry .whl/ (and the data) to that machine:
#
#   launch/gpu_wheels.sh            # -> .whl/*.whl, about 0.3 MB
#
# Only wheels built for any platform (py3-none-any) are fetched, so the folder
# works on every CPU architecture and Python >= 3.11; --no-deps keeps out the
# heavy dependencies (jax, flax, numpy) that the GPU machine already has.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${1:-.whl}
mkdir -p "$OUT"
# ml_collections: configs; clu: metrics (its TensorBoard writer is optional);
# importlib_resources: needed by etils.epath, which clu and orbax import.
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation py --abi none --platform any \
    -d "$OUT" "ml_collections>=1.0" "clu>=0.0.12" importlib_resources
ls -1 "$OUT"
