#!/usr/bin/env bash
# VGG-16 / CIFAR-10 ticket search + PGD training + evaluation on one GPU
# machine, inside a wall-clock budget, with nothing installed but Python
# 3.12, jax, flax, optax, orbax-checkpoint (no TensorFlow, TFDS, clu or
# ml_collections, no network):
#
#   launch/gpu_wheels.sh                          # here: .whl/ (ml_collections, clu)
#   launch/gpu_vgg16.sh 9 data/cifar10 OUT        # there: 9 minutes in all
#
# DATA is the image-folder root (DATA/{train,test}/<class>/*.jpg) or the
# cifar10-jpeg.tar.gz that unpacks to it. The run's checkpoints live in
# WORKDIR (default /tmp/gpu_vgg16_work): run the same command again and it
# resumes. OUT (at most 60 MB) gets results.json, the masks (bit-packed),
# status.json (wall time per phase, steps run against planned), plots and the
# console log. Phases are cut to the budget (config.time_budget_s, see
# scalable_awt/budget.py): results.json says how many steps each ran.
# Extra arguments go to the runner (e.g. --config.search.density=0.1);
# SMOKE=1 runs the CPU-sized smoke form (tests/test_gpu_launch.py).
set -euo pipefail
MINUTES=${1:?usage: $0 MINUTES DATA OUT [runner flags...]}
DATA=${2:?usage: $0 MINUTES DATA OUT [runner flags...]}
OUT=${3:?usage: $0 MINUTES DATA OUT [runner flags...]}
shift 3
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORKDIR=${WORKDIR:-/tmp/gpu_vgg16_work}
START=$(date +%s)

# The pure-Python packages the GPU machine lacks, from launch/gpu_wheels.sh.
if compgen -G "$REPO/.whl/*.whl" > /dev/null; then
  SITE=${SITE:-/tmp/gpu_vgg16_site}
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$SITE" "$REPO"/.whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if [[ "$DATA" == *.tar.gz ]]; then
  UNPACKED=${UNPACKED:-/tmp/gpu_vgg16_data}
  if [[ ! -d "$UNPACKED/train" ]]; then
    mkdir -p "$UNPACKED" && tar -xzf "$DATA" -C "$UNPACKED"
  fi
  DATA=$UNPACKED
fi

CONFIG="$REPO/configs/vgg16_cifar10.py:gpu"
if [[ "${SMOKE:-0}" == 1 ]]; then CONFIG="$CONFIG,smoke"; fi
# The runner's budget is what is left after start-up, less a minute for the
# export and slack (at least 30 s of budget in all).
ELAPSED=$(( $(date +%s) - START ))
BUDGET=$(( MINUTES * 60 - ELAPSED - 60 ))
if (( BUDGET < 30 )); then BUDGET=30; fi

mkdir -p "$OUT"
set +e
"$PYTHON" -m scalable_awt.main --config "$CONFIG" --workdir "$WORKDIR" \
    --config.data.data_dir="$DATA" --config.time_budget_s="$BUDGET" "$@" \
    2>&1 | tee "$OUT/console.log"
STATUS=${PIPESTATUS[0]}
set -e
if [[ -f "$WORKDIR/config.json" ]]; then
  "$PYTHON" -m scalable_awt.export "$WORKDIR" "$OUT" > /dev/null
fi
echo "wall time $(( $(date +%s) - START )) s of ${MINUTES} min; results in $OUT (exit $STATUS)"
exit "$STATUS"
