#!/usr/bin/env bash
# Runs the runner as N JAX processes on this machine (one coordinator on
# localhost), e.g. to try multi-host data parallelism on CPU:
#
#   launch/local_multiprocess.sh 2 --config configs/mlp_digits.py:smoke --workdir runs/mp
#
# Each process gets DEVICES_PER_PROCESS simulated CPU devices (default 1); on a
# GPU machine set CUDA_VISIBLE_DEVICES per process instead. Logs of process i
# go to <workdir>/process_<i>.log; process 0 also prints to the terminal.
set -euo pipefail
NUM_PROCESSES=${1:?usage: $0 NUM_PROCESSES [runner flags...]}
shift
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
PYTHON=${PYTHON:-.venv/bin/python}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-1}
WORKDIR=runs/multiprocess
for ((a = 1; a <= $#; a++)); do
  if [[ "${!a}" == --workdir=* ]]; then WORKDIR="${!a#--workdir=}"; fi
  if [[ "${!a}" == --workdir ]]; then b=$((a + 1)); WORKDIR="${!b}"; fi
done
mkdir -p "$WORKDIR"
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS} ${XLA_FLAGS:-}"
pids=()
for ((i = NUM_PROCESSES - 1; i >= 0; i--)); do
  cmd=("$PYTHON" -m scalable_awt.main --distributed
       --coordinator_address="127.0.0.1:${PORT}" --num_processes="$NUM_PROCESSES"
       --process_id="$i" "$@")
  if [[ $i -eq 0 ]]; then
    "${cmd[@]}" 2>&1 | tee "$WORKDIR/process_0.log" &
  else
    "${cmd[@]}" > "$WORKDIR/process_${i}.log" 2>&1 &
  fi
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
