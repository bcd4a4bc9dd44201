#!/usr/bin/env bash
# SLURM: one task per node (or per GPU), all tasks run the same command;
# `jax.distributed.initialize()` reads the SLURM variables itself.
#
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm.sh \
#       --config configs/vgg16_cifar10.py --workdir /shared/runs/vgg16 \
#       --config.data.data_dir=/shared/data/cifar10
#
# The workdir and the data must be on a file system that every node sees.
# Re-submitting the same command resumes from the newest checkpoint. On
# preemption (and, with --signal, 120 s before the time limit) SLURM sends
# SIGTERM: the runner saves the current step, prints "preempted (SIGTERM) at
# <phase> step N; run the same command again to resume" and exits with 130;
# --requeue starts the next job, which continues there.
#SBATCH --job-name=scalable_awt
#SBATCH --output=slurm-%j.out
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
srun --kill-on-bad-exit=1 "$PYTHON" -m scalable_awt.main --distributed "$@"
