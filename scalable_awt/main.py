r"""Command line: `python -m scalable_awt.main --config configs/X.py --workdir DIR`.

Flags only; the run is `train.train_and_evaluate(config, workdir)`.

    python -m scalable_awt.main --config configs/mlp_digits.py --workdir runs/x
    python -m scalable_awt.main --config configs/vgg16_cifar10.py:smoke \
        --workdir runs/smoke --config.train.epochs=1 --config.search.density=0.05

Running again with the same `--workdir` resumes where the run stopped (and
returns at once when everything is done). Multi-host: add `--distributed`
(see `launch/`). Exit status: 0 done, 2 bad config or flags, 1 other errors.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/mlp_digits.py[:smoke].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Run directory (created; resumed if it exists).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", os.environ.get("SCALABLE_AWT_DISTRIBUTED", "") == "1",
    "Call jax.distributed.initialize() (multi-host; auto-detects SLURM etc.).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (with --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes (with --distributed).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index (with --distributed).")


def _die(message: str) -> None:
  sys.stderr.write(f"error: {message}\n")
  sys.exit(2)


def _load_config_file(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_cfg", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _explain_override(argv) -> str | None:
  """Names the unknown key of a `--config.a.b=...` override, if there is one."""
  spec = None
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
  if spec is None:
    return None
  try:
    config = _load_config_file(spec)
  except Exception:  # pylint: disable=broad-except
    return None
  for a in argv:
    match = re.match(r"--config\.([\w.]+)", a)
    if not match:
      continue
    node, prefix = config, "config"
    for part in match.group(1).split("."):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if part not in keys:
        return (f"--{prefix}.{part}: unknown key; keys of {prefix} are: "
                f"{', '.join(sorted(keys)) or '(none: it is a value)'}")
      node, prefix = node[part], f"{prefix}.{part}"
  return None


def parse_flags(argv):
  """absl flag parsing with one-line errors instead of tracebacks."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _die(str(e))
  except (AttributeError, KeyError, ValueError, TypeError) as e:
    _die(_explain_override(argv) or f"bad --config override: {e}")
  spec = flags.FLAGS["config"].config_filename if hasattr(
      flags.FLAGS["config"], "config_filename") else None
  if flags.FLAGS["config"].value is None and not spec:
    _die("--config is required, e.g. --config configs/mlp_digits.py")
  try:
    config = flags.FLAGS["config"].value
    config.keys()  # A file that failed to load raises here.
  except Exception as e:  # pylint: disable=broad-except
    _die(f"cannot load config {spec or ''}: {type(e).__name__}: {e}")
  if not flags.FLAGS.workdir:
    _die("--workdir is required, e.g. --workdir runs/x")
  return rest


def main(argv):
  if len(argv) > 1:
    _die(f"unexpected arguments {argv[1:]}")
  from scalable_awt import config_validation
  if _DISTRIBUTED.value:
    from scalable_awt import distribution
    distribution.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
  from scalable_awt import train
  config = _CONFIG.value
  try:
    config_validation.validate(config,
                               implemented_methods=tuple(train.MASK_FNS))
  except config_validation.ConfigError as e:
    _die(str(e))
  logging.info("config:\n%s", config)
  from scalable_awt.checkpoints import CorruptCheckpointError
  from scalable_awt.data import DataNotFoundError
  try:
    results = train.train_and_evaluate(config, _WORKDIR.value)
  except config_validation.ConfigError as e:
    _die(str(e))
  except (DataNotFoundError, CorruptCheckpointError) as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(1)
  for name, m in results.get("models", {}).items():
    print(f"{name}: density {m['density']:.4f}, natural "
          f"{m['natural_accuracy']:.4f}, robust {m['robust_accuracy']}")
  print(f"results: {os.path.join(os.path.abspath(_WORKDIR.value), 'results.json')}")


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
