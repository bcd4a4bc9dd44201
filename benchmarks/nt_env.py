"""Creates the pinned environment in which neural-tangents runs.

neural-tangents 0.6.5 (its last release) does not import on JAX >= 0.6, so it
is used only as an independent reference, in its own virtual environment at
`benchmarks/.nt-env` (git-ignored) with

    jax==0.5.3 jaxlib==0.5.3 neural-tangents==0.6.5 numpy

Idempotent: an environment that already imports all three is left alone.

    python benchmarks/nt_env.py            # create (if needed), print its python
    python benchmarks/nt_env.py --check    # exit 1 if missing or broken
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parent
ENV_DIR = BENCHMARKS / ".nt-env"
PINS = ("jax==0.5.3", "jaxlib==0.5.3", "neural-tangents==0.6.5", "numpy<2.3")
BASE_PYTHON = os.environ.get("NT_ENV_PYTHON", "python3.11")

_PROBE = (
    "import jax, neural_tangents; "
    "assert jax.__version__ == '0.5.3', jax.__version__; "
    "print(jax.__version__)"
)


def env_python() -> pathlib.Path:
  return ENV_DIR / "bin" / "python"


def is_ready() -> bool:
  python = env_python()
  if not python.exists():
    return False
  result = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  return result.returncode == 0


def ensure(verbose: bool = True) -> pathlib.Path:
  """Returns the pinned environment's python, creating the environment if needed."""
  if is_ready():
    return env_python()
  if ENV_DIR.exists():
    shutil.rmtree(ENV_DIR)
  if verbose:
    print(f"Creating {ENV_DIR} with {' '.join(PINS)}", file=sys.stderr)
  subprocess.run([BASE_PYTHON, "-m", "venv", str(ENV_DIR)], check=True)
  pip = [str(env_python()), "-m", "pip", "install", "--quiet"]
  subprocess.run(pip + ["--upgrade", "pip"], check=True)
  subprocess.run(pip + list(PINS), check=True)
  if not is_ready():
    raise RuntimeError(f"{ENV_DIR} was created but neural_tangents does not import.")
  return env_python()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--check", action="store_true", help="only check, create nothing")
  args = parser.parse_args()
  if args.check:
    ready = is_ready()
    print("ready" if ready else "missing")
    sys.exit(0 if ready else 1)
  print(ensure())


if __name__ == "__main__":
  main()
