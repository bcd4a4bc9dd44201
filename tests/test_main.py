"""End to end through `train_and_evaluate` and the real entry point."""
import os
import time

import numpy as np
import pytest

import scalable_awt
from scalable_awt import config_schema
from scalable_awt import config_validation
from scalable_awt import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy():
  c = config_schema.apply_smoke(config_schema.get_config())
  c.data.name = "gaussian_toy"
  c.data.toy_dim = 20
  c.model.name = "linear"
  c.attack.domain = "none"
  c.attack.norm = "l2"
  c.attack.epsilon = 1.0
  c.attack.train_step_size = 0.5
  c.methods = ("dense", "random")
  c.search.density = 0.5
  return c


def test_run_resume_and_load(tmp_path):
  c = _toy()
  res = train.train_and_evaluate(c, str(tmp_path))
  assert set(res["models"]) == {"dense", "random"}
  for name, m in res["models"].items():
    assert 0 <= m["natural_accuracy"] <= 1
    assert set(m["robust_accuracy"]) == {"pgd5"}
    assert m["density"] == (1.0 if name == "dense" else 0.5)
  for phase in ("search", "train", "evaluate"):
    assert phase in res["wall_time_s"]
  for f in ("config.json", "results.json", "status.json", "plots/accuracy.png"):
    assert (tmp_path / f).exists(), f
  assert list(tmp_path.glob("events.out.tfevents*"))  # TensorBoard files.
  start = time.time()
  again = train.train_and_evaluate(c, str(tmp_path))
  assert time.time() - start < 2 and again["models"] == res["models"]
  apply_fn, params = scalable_awt.load_trained(str(tmp_path), "random")
  x = np.zeros((3, 20), np.float32)
  assert apply_fn(params, x).shape == (3, 2)
  # Changing a results-relevant key in the same workdir is refused.
  c2 = _toy()
  c2.seed = 1
  with pytest.raises(config_validation.ConfigError, match="seed"):
    train.train_and_evaluate(c2, str(tmp_path))


def test_skipped_phases(tmp_path):
  c = _toy()
  c.methods = ("random",)
  c.phases = ("search",)
  res = train.train_and_evaluate(c, str(tmp_path))
  assert res["models"] == {}
  c.phases = ("train",)
  train.train_and_evaluate(c, str(tmp_path))
  c.phases = ("evaluate",)
  res = train.train_and_evaluate(c, str(tmp_path))
  assert "random" in res["models"]
  c.phases = ("evaluate",)
  c.methods = ("dense",)
  with pytest.raises(RuntimeError, match="search phase"):
    train.train_and_evaluate(c, str(tmp_path / "fresh"))
