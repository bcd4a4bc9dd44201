"""Checkpoints: kill -9 and resume is bit-identical; corrupt steps never win."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scalable_awt import checkpoints as ckpt_lib
from scalable_awt import config_schema
from scalable_awt import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state():
  p = {"w": jnp.arange(12.0).reshape(3, 4), "b": jnp.zeros(4)}
  return {"step": jnp.int32(0), "params": p, "model_state": {},
          "opt_state": optax.adam(1e-3).init(p)}


def _corrupt(step_dir):
  for f in glob.glob(os.path.join(step_dir, "**"), recursive=True):
    if os.path.isfile(f):
      with open(f, "wb") as fh:
        fh.write(b"\x00garbage")


def test_corrupt_latest_falls_back_and_is_kept(tmp_path):
  d = str(tmp_path / "ck")
  state = _state()
  with ckpt_lib.Checkpoints(d, keep=3) as store:
    for s in (1, 2, 3):
      store.save(s, jax.tree.map(lambda x: x + s, state), {"step": s})
  _corrupt(os.path.join(d, "3"))
  with ckpt_lib.Checkpoints(d, keep=3) as store:
    step, restored, meta = store.restore(ckpt_lib.abstract_like(state))
    assert step == 2 and meta == {"step": 2}
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"] + 2)
    assert isinstance(restored["opt_state"], tuple)  # Real optax types back.
    # The corrupt step was moved aside, not deleted; saving step 3 again
    # writes a fresh directory and leaves step 2 untouched.
    assert len(os.listdir(d + ".corrupt")) == 1
    store.save(3, state, {"step": 3})
  assert sorted(os.listdir(d)) == ["1", "2", "3"]


def test_all_corrupt_stops_with_clear_error(tmp_path):
  d = str(tmp_path / "ck")
  with ckpt_lib.Checkpoints(d) as store:
    store.save(5, _state(), {"step": 5})
  _corrupt(os.path.join(d, "5"))
  with ckpt_lib.Checkpoints(d) as store:
    with pytest.raises(ckpt_lib.CorruptCheckpointError, match="unreadable.*moved"):
      store.restore(ckpt_lib.abstract_like(_state()))
  assert os.listdir(d + ".corrupt")


def _toy_config():
  c = config_schema.apply_smoke(config_schema.get_config())
  c.data.name = "gaussian_toy"
  c.data.toy_dim = 20
  c.model.name = "linear"
  c.attack.domain = "none"
  c.attack.norm = "l2"
  c.attack.epsilon = 1.0
  c.attack.train_step_size = 0.5
  c.train.epochs = 2
  c.train.curve_every_epochs = 1
  c.checkpoint.every_steps = 4
  c.methods = ("random",)
  return c


def test_runner_recovers_from_corrupt_final_checkpoint(tmp_path):
  c = _toy_config()
  first = train.train_and_evaluate(c, str(tmp_path))
  final = os.path.join(str(tmp_path), "checkpoints", "train", "random")
  steps = sorted(int(s) for s in os.listdir(final) if s.isdigit())
  _corrupt(os.path.join(final, str(steps[-1])))
  os.remove(os.path.join(str(tmp_path), "results.json"))  # Force a rerun.
  for f in glob.glob(os.path.join(str(tmp_path), "eval", "*")):
    os.remove(f)
  again = train.train_and_evaluate(c, str(tmp_path))
  assert os.listdir(final + ".corrupt")
  for m in ("random",):
    assert again["models"][m]["natural_accuracy"] == first["models"][m]["natural_accuracy"]
    assert again["models"][m]["robust_accuracy"] == first["models"][m]["robust_accuracy"]
    assert again["models"][m]["curve"] == first["models"][m]["curve"]


NO_TF = ("import sys; sys.modules['tensorflow'] = None; "
         "sys.modules['tensorflow_datasets'] = None; "
         "from scalable_awt import main; main.run()")
ARGS = ["--config", "configs/mlp_digits.py:smoke", "--config.train.epochs=4",
        "--config.attack.train_steps=10", "--config.checkpoint.every_steps=4",
        "--config.methods=('random',)"]


def _cmd(workdir):
  return [sys.executable, "-c", NO_TF, *ARGS, "--workdir", workdir]


def _params(workdir, name):
  import scalable_awt
  _, params = scalable_awt.load_trained(workdir, name)
  return jax.tree.map(np.asarray, params)


@pytest.mark.slow
def test_kill9_mid_training_then_resume_is_bit_identical(tmp_path):
  # A compilation cache shared by the three processes: only the first compiles.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  straight = str(tmp_path / "straight")
  out = subprocess.run(_cmd(straight), cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]

  killed = str(tmp_path / "killed")
  proc = subprocess.Popen(_cmd(killed), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckdir = os.path.join(killed, "checkpoints", "train", "random")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = [int(s) for s in (os.listdir(ckdir) if os.path.isdir(ckdir) else [])
             if s.isdigit()]
    if steps and max(steps) >= 8:
      break
    time.sleep(0.02)
  assert proc.poll() is None, "run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  status = json.load(open(os.path.join(killed, "status.json")))
  assert "random" not in status["done"].get("train", {})  # Killed mid-phase.

  out = subprocess.run(_cmd(killed), cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  saved = json.load(open(os.path.join(killed, "config.json")))
  assert saved["train"]["epochs"] == 4  # The resolved (overridden) config.
  a = json.load(open(os.path.join(straight, "results.json")))
  b = json.load(open(os.path.join(killed, "results.json")))
  for m in ("random",):
    for key in ("natural_accuracy", "robust_accuracy", "curve", "density"):
      assert a["models"][m][key] == b["models"][m][key], (m, key)
    pa, pb = _params(straight, m), _params(killed, m)
    jax.tree.map(np.testing.assert_array_equal, pa, pb)
