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


def _digits_search_config():
  c = config_schema.apply_smoke(config_schema.get_config())
  c.data.num_train = 256
  c.data.num_test = 64
  c.model.mlp_features = (16,)
  c.methods = ("dense", "random", "awt", "ntt", "snip")
  c.search.density = 0.2
  c.search.kernel_batch = 8
  c.search.batch_size = 32
  c.search.mask_update_period = 3
  c.train.epochs = 1
  c.checkpoint.every_steps = 3
  return c


def test_ticket_search_pipeline_and_resume(tmp_path, monkeypatch):
  """search -> train -> evaluate with every method; then a search killed mid-way resumes."""
  c = _digits_search_config()
  res = train.train_and_evaluate(c, str(tmp_path / "full"))
  assert set(res["models"]) == set(c.methods)
  for name in ("random", "awt", "ntt", "snip"):
    assert res["models"][name]["density"] == pytest.approx(0.2, abs=0.01)
  assert (tmp_path / "full" / "plots" / "search_awt.png").exists()
  _, params = scalable_awt.load_trained(str(tmp_path / "full"), "awt")
  kernel = np.asarray(params["Dense_0"]["kernel"])
  assert 0.15 < np.mean(kernel != 0) < 0.25  # The ticket stays sparse.

  # Interrupt the AWT search after 4 of its 8 steps, then resume. The step
  # itself is jitted, so the interruption comes from the host-side batch feed.
  c.methods = ("awt",)
  c.phases = ("search",)
  from scalable_awt import data as data_lib
  real_get = data_lib.Batches.get
  calls = {"n": 0}

  def interrupted_get(self, step):
    calls["n"] += 1
    if calls["n"] > 4:
      raise KeyboardInterrupt("simulated preemption")
    return real_get(self, step)

  monkeypatch.setattr(data_lib.Batches, "get", interrupted_get)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(c, str(tmp_path / "resumed"))
  assert calls["n"] == 5
  # Steps 1-3 were saved (checkpoint.every_steps = 3) before the interruption.
  assert (tmp_path / "resumed" / "checkpoints/search/awt/state/3").is_dir()
  monkeypatch.setattr(data_lib.Batches, "get", real_get)
  train.train_and_evaluate(c, str(tmp_path / "resumed"))
  import json
  read = lambda d: json.load(open(tmp_path / d / "checkpoints/search/awt/history.json"))
  assert read("resumed") == read("full")
