"""Data parallelism: 1 vs 8 devices agree; two processes run one step together."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from scalable_awt import adversarial_training as at
from scalable_awt import distribution
from scalable_awt import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup():
  model = models.create_model("mlp", features=(32,), num_classes=10)
  params, state = models.init_model(model, jax.random.PRNGKey(0), (1, 8, 8, 1))
  tx = at.make_optimizer(name="adam", learning_rate=1e-2, total_steps=10)
  step = at.make_train_step(model, tx, epsilon=0.1, step_size=0.03, num_steps=3)
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((16, 8, 8, 1), np.float32),
           "label": rng.integers(0, 10, 16).astype(np.int32)}
  return at.create_train_state(params, state, tx), step, batch


def _run(mesh, steps=2):
  state, step, batch = _setup()
  fn = distribution.data_parallel(step, mesh)
  state = distribution.replicate(state, mesh)
  sharded = {k: jax.device_put(v, distribution.batch_sharded(mesh))
             for k, v in batch.items()}
  for i in range(steps):
    state, metrics = fn(state, sharded, jax.random.PRNGKey(i))
  return jax.device_get(state.params), jax.device_get(metrics)


def test_one_vs_eight_devices():
  assert jax.device_count() == 8, "conftest sets 8 CPU devices"
  p1, m1 = _run(distribution.make_mesh(jax.devices()[:1]))
  p8, m8 = _run(distribution.make_mesh())
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6), p1, p8)
  for k in m1:
    np.testing.assert_allclose(m1[k], m8[k], rtol=1e-5, atol=1e-6)


def test_batch_size_must_divide_devices():
  with pytest.raises(ValueError, match="divisible by the 8 devices"):
    distribution.check_batch_size(12, distribution.make_mesh())


def test_sharded_evaluation_matches():
  from scalable_awt import evaluation
  state, _, batch = _setup()
  model = models.create_model("mlp", features=(32,), num_classes=10)
  apply_fn = models.make_apply_fn(model)
  kw = dict(key=jax.random.PRNGKey(0), epsilon=0.1, pgd_steps=3, batch_size=16)
  a = evaluation.evaluate(apply_fn, state.params, batch["image"], batch["label"], **kw)
  mesh = distribution.make_mesh()
  b = evaluation.evaluate(distribution.shard_inputs_fn(apply_fn, mesh),
                          distribution.replicate(state.params, mesh),
                          batch["image"], batch["label"], **kw)
  assert a["natural_accuracy"] == b["natural_accuracy"]
  assert abs(a["robust_accuracy"] - b["robust_accuracy"]) <= 1 / 16


WORKER = r"""
import sys, jax, numpy as np
from scalable_awt import distribution, data
distribution.initialize_distributed(sys.argv[1], 2, int(sys.argv[2]))
sys.path.insert(0, sys.argv[3])
from test_distribution import _setup
assert jax.process_count() == 2 and jax.device_count() == 4
mesh = distribution.make_mesh()
state, step, batch = _setup()
fn = distribution.data_parallel(step, mesh)
state = distribution.replicate(state, mesh)
b = data.Batches(batch["image"], batch["label"], 16, seed=0,
                 sharding=distribution.batch_sharded(mesh))
# The batch order is a permutation; undo it by using identity-ordered data.
state, metrics = fn(state, b.get(0), jax.random.PRNGKey(0))
loss = float(distribution.to_host(metrics)["loss"])
print("LOSS", repr(loss))
"""


def test_two_processes_one_step(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             TF_CPP_MIN_LOG_LEVEL="3")
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  procs = [subprocess.Popen([sys.executable, str(script), f"127.0.0.1:{port}",
                             str(i), tests_dir], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  losses = [float(o.split("LOSS")[1]) for o, _ in outs]
  assert losses[0] == losses[1]
  # The same global batch on one device gives the same loss.
  state, step, batch = _setup()
  perm = np.random.default_rng((0, 0)).permutation(16)
  one = {k: v[perm] for k, v in batch.items()}
  _, metrics = jax.jit(step)(state, one, jax.random.PRNGKey(0))
  np.testing.assert_allclose(losses[0], float(metrics["loss"]), rtol=1e-5)
