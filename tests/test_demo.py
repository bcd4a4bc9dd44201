"""`make demo` (scalable_awt.demo): runs end to end and keeps the console quiet."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_smoke_runs_and_hides_tensorflow_start_up_lines(tmp_path):
  # As `make demo` runs it: no TF_CPP_MIN_LOG_LEVEL from the caller (conftest sets one).
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  workdir = tmp_path / "demo"
  done = subprocess.run(
      [sys.executable, "-m", "scalable_awt.demo", "--smoke", "--workdir", str(workdir)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  assert (workdir / "results.json").exists()
  console = done.stdout + done.stderr
  assert "worst case" in console and "results:" in console
  # TensorFlow's C++ start-up notes (oneDNN, CUDA probing) are held back.
  for noise in ("oneDNN", "cuInit", "cuda drivers"):
    assert noise not in console, noise
