r"""Command line: `python -m scalable_awt.main --config configs/X.py --workdir DIR`.

Flags only; the run is `train.train_and_evaluate(config, workdir)`.

    python -m scalable_awt.main --config configs/mlp_digits.py --workdir runs/x
    python -m scalable_awt.main --config vgg16_cifar10.py:smoke \
        --workdir runs/smoke --config.train.epochs=1 --config.search.density=0.05

`--config NAME` or `NAME.py` is also looked up in the repository's `configs/`
folder (and in `./configs`) when the path itself does not exist. Running
again with the same `--workdir` resumes where the run stopped (and returns
at once when everything is done). Multi-host: add `--distributed` (see
`launch/`).

Console: one progress line per phase and a summary; `--verbosity=0` adds the
INFO logs (this package's and CLU's metric lines), `--verbosity=1` also
Orbax's checkpointing logs, TensorFlow's and XLA's C++ logs and JAX's
platform warnings.

Exit status: 0 done; 2 bad config, flags, data folder or workdir (one line
on stderr saying which value and what to do); 130 interrupted (Ctrl-C, or
SIGTERM as schedulers send on preemption: the current step is saved and the
same command resumes); 1 other errors.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from scalable_awt import interrupts

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/mlp_digits.py[:smoke] (or just "
    "mlp_digits[:smoke], found in configs/).", lock_config=True)
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

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = -1  # Default `--verbosity`: warnings and errors only.


def _die(message: str, status: int = 2) -> None:
  sys.stderr.write(f"error: {message}\n")
  sys.exit(status)


# ----------------------------------------------------------------- --config


def config_dirs() -> list[str]:
  """Where a `--config` path that does not exist is looked up."""
  dirs = [os.path.join(os.getcwd(), "configs"), os.path.join(REPO_ROOT, "configs")]
  return [d for i, d in enumerate(dirs) if os.path.isdir(d) and d not in dirs[:i]]


def find_config(path: str) -> str | None:
  """`path` if it exists, else the first match in `config_dirs()`, else None."""
  names = [path] if path.endswith(".py") else [path, path + ".py"]
  candidates = list(names)
  for folder in config_dirs():
    for name in names:
      candidates.append(os.path.join(folder, name))
      # "configs/x.py" given from another working directory.
      candidates.append(os.path.join(os.path.dirname(folder), name))
  return next((c for c in candidates if os.path.isfile(c)), None)


def _available_configs() -> str:
  names = sorted({f for d in config_dirs() for f in os.listdir(d)
                  if f.endswith(".py") and not f.startswith("_")})
  return ", ".join(names) or "(no configs/ folder found)"


def resolve_config_argument(argv: list[str]) -> list[str]:
  """`argv` with the `--config` file path made to point at an existing file."""
  argv = list(argv)
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      where, spec = i, a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(argv):
      where, spec = i + 1, argv[i + 1]
    else:
      continue
    path, sep, arg = spec.partition(":")
    found = find_config(path)
    if found is None:
      _die(f"config file not found: {path!r} (looked in the working directory"
           f" and {', '.join(config_dirs()) or 'no configs/ folder'}); "
           f"available configs: {_available_configs()}")
    argv[where] = ("--config=" if where == i else "") + found + sep + arg
  return argv


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
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"--{prefix}.{part}: unknown key{hint}; keys of {prefix} are: "
                f"{', '.join(sorted(keys)) or '(none: it is a value)'}")
      node, prefix = node[part], f"{prefix}.{part}"
  return None


def _flag_error(error: Exception) -> str:
  """One line for an absl flag error (a config file's traceback cut away)."""
  text = str(error)
  first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
  if "Traceback" not in text:
    return first
  inner = error
  while inner.__cause__ is not None or inner.__context__ is not None:
    inner = inner.__cause__ or inner.__context__
  if inner is error:  # Only the text: its last line names the error.
    return f"{first.rstrip(':')}: {text.strip().splitlines()[-1]}"
  return f"{first.rstrip(':')}: {type(inner).__name__}: {inner}"


def parse_flags(argv):
  """absl flag parsing with one-line errors instead of tracebacks."""
  argv = resolve_config_argument(argv)
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _die(_explain_override(argv) or _flag_error(e))
  except (AttributeError, KeyError, ValueError, TypeError) as e:
    _die(_explain_override(argv) or f"bad --config override: {e}")
  except Exception as e:  # pylint: disable=broad-except
    _die(f"cannot load the --config file: {type(e).__name__}: {e}")
  if flags.FLAGS["config"].value is None:
    _die("--config is required, e.g. --config configs/mlp_digits.py")
  if not flags.FLAGS.workdir:
    _die("--workdir is required, e.g. --workdir runs/x")
  return rest


# ----------------------------------------------------------------- logs


def requested_verbosity(argv) -> int | None:
  """`--verbosity`/`-v` from the raw command line (before absl parses it),
  None when not given."""
  for i, a in enumerate(argv):
    for name in ("--verbosity", "-v", "--v"):
      value = None
      if a.startswith(name + "="):
        value = a.split("=", 1)[1]
      elif a == name and i + 1 < len(argv):
        value = argv[i + 1]
      if value is not None:
        try:
          return int(value)
        except ValueError:
          return None  # absl reports the bad value.
  return None


class _NoLibraryInfo(logging.Filter):
  """Drops INFO (and DEBUG) records of chatty libraries (Orbax: hundreds per
  run); their warnings and errors pass."""

  LIBRARIES = (f"{os.sep}orbax{os.sep}",)

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(
        lib in record.pathname for lib in self.LIBRARIES)


def quiet_libraries(verbosity: int) -> None:
  """Silences what only a developer needs, unless `verbosity` asks for it.

  TensorFlow's and XLA's C++ logs need the environment variable before they
  load, hence this runs before anything imports them.
  """
  if verbosity >= 1:
    return
  from absl import logging as absl_logging
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _NoLibraryInfo) for f in handler.filters):
    handler.addFilter(_NoLibraryInfo())
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # "Unable to initialize backend 'tpu'/'cuda'" and "falling back to cpu".
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
  if verbosity < 0:
    import warnings
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


# ----------------------------------------------------------------- run


def check_workdir(workdir: str) -> str:
  """The absolute workdir; exits (status 2) if it cannot be created/written.

  Touches nothing: checks the directory or its nearest existing parent.
  """
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    _die(f"--workdir={workdir}: {path} exists and is not a directory; pass a "
         "directory path.")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    _die(f"--workdir={workdir}: cannot create it, {existing} is a file; pass a "
         "path under a writable directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    what = "is not writable" if existing == path else (
        f"cannot be created ({existing} is not writable)")
    _die(f"--workdir={workdir}: {path} {what}; pass a directory you can write "
         "to, e.g. --workdir runs/x.")
  return path


def _summary(results: dict, workdir: str) -> None:
  from scalable_awt import results as results_lib
  print("\n".join(results_lib.summary_lines(results)))
  print(f"results: {os.path.join(workdir, 'results.json')}")


def main(argv):
  if len(argv) > 1:
    _die(f"unexpected arguments {argv[1:]}; values need a flag, e.g. "
         "--workdir runs/x")
  if requested_verbosity(sys.argv) is None:
    # absl raises an unset --verbosity to INFO after parsing; quiet instead.
    flags.FLAGS.verbosity = QUIET
  quiet_libraries(flags.FLAGS.verbosity)
  from scalable_awt import config_validation
  from scalable_awt import data as data_lib
  from scalable_awt import train
  config = _CONFIG.value
  try:
    config_validation.validate(config,
                               implemented_methods=tuple(train.MASK_FNS))
    data_lib.check_data_dir(config.data)
  except (config_validation.ConfigError, data_lib.DataError) as e:
    _die(str(e))
  workdir = check_workdir(_WORKDIR.value)
  if _DISTRIBUTED.value:
    from scalable_awt import distribution
    distribution.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
  logging.info("config:\n%s", config)
  from scalable_awt.checkpoints import CorruptCheckpointError
  try:
    results = train.train_and_evaluate(config, workdir)
  except (config_validation.ConfigError, data_lib.DataError) as e:
    _die(str(e))
  except CorruptCheckpointError as e:
    _die(str(e), status=1)
  _summary(results, workdir)


def run(argv=None):
  argv = list(sys.argv if argv is None else argv)
  sys.argv = argv  # What `main` reads `--verbosity` from.
  requested = requested_verbosity(argv)
  quiet_libraries(QUIET if requested is None else requested)
  interrupts.install_sigterm_handler()
  try:
    app.run(main, argv=argv, flags_parser=parse_flags)
  except KeyboardInterrupt as e:
    how = "preempted (SIGTERM)" if isinstance(e, interrupts.Preempted) else (
        "interrupted")
    sys.stdout.flush()
    # On a terminal the progress line may be half drawn: end it first.
    newline = "\n" if sys.stderr.isatty() else ""
    sys.stderr.write(f"{newline}{how} {interrupts.describe()}; run the same "
                     "command again to resume\n")
    sys.exit(130)


if __name__ == "__main__":
  run()
