"""The method registry, the awt_no_kernel ablation, settings and results rows."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from scalable_awt import config_schema
from scalable_awt import config_validation as cv
from scalable_awt import data as data_lib
from scalable_awt import distribution, metrics, models, results, rng
from scalable_awt import search_phase, settings, tickets, train


def test_registry_holds_every_method():
  assert set(tickets.MASK_FNS) == {"dense", "random", "magnitude", "snip", "awt",
                                   "awt_no_kernel", "ntt"}
  assert train.MASK_FNS is tickets.MASK_FNS  # Re-exported for older callers.
  assert set(tickets.SEARCHED) <= set(tickets.MASK_FNS)


def test_searched_methods_pass_their_epsilon_and_gamma(monkeypatch):
  calls = {}

  def fake_run_search(s, params, key, *, context, method, epsilon, kernel_weight):
    calls[method] = (epsilon, kernel_weight)
    return "mask", None

  monkeypatch.setattr(tickets, "run_search", fake_run_search)
  c = config_schema.get_config()
  c.attack.epsilon, c.search.kernel_weight = 0.2, 5e-3
  for method in tickets.SEARCHED:
    assert tickets.MASK_FNS[method](c, None, None, context=None) == "mask"
  # awt_no_kernel: the config's kernel_weight keeps its meaning for awt.
  assert calls == {"awt": (0.2, 5e-3), "awt_no_kernel": (0.2, 0.0),
                   "ntt": (0.0, 5e-3)}


def test_awt_no_kernel_shares_awt_random_numbers(monkeypatch):
  keys = {}
  monkeypatch.setattr(search_phase, "search_one",
                      lambda s, w, method, *, key, params, **_: keys.setdefault(method, key))
  c = config_schema.get_config()
  c.methods = ("random", "awt", "awt_no_kernel", "ntt")
  search_phase.search_all(settings.resolve(c), "unused", params=None)
  same = lambda a, b: bool(np.all(jax.random.key_data(a) == jax.random.key_data(b))
                           if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
                           else np.all(a == b))
  assert same(keys["awt_no_kernel"], keys["awt"])
  assert not same(keys["ntt"], keys["awt"])


def _tiny_search(tmp_path, method, **search):
  """A real search of 4 steps (2 epochs of 2 batches); `(settings, mask, history)`."""
  c = config_schema.apply_smoke(config_schema.get_config())
  c.data.num_train = 64
  c.model.mlp_features = (8,)
  c.search.batch_size, c.search.kernel_batch = 32, 4
  c.search.epochs, c.search.log_every_steps = 2, 1
  c.search.density = 0.5
  c.search.update(search)
  s = settings.resolve(c)
  dataset = data_lib.load(s.data, seed=s.seed)
  model = s.model.build(dataset.num_classes)
  params, model_state = models.init_model(model, jax.random.PRNGKey(0),
                                          (1,) + dataset.image_shape)
  context = tickets.SearchContext(
      model=model, model_state=model_state, dataset=dataset,
      mesh=distribution.make_mesh(jax.devices()[:1]), workdir=str(tmp_path),
      writer=metrics.JsonlWriter(str(tmp_path / "m.jsonl")))
  mask = tickets.MASK_FNS[method](s, params, rng.phase_keys(0)["search"],
                                  context=context)
  return s, mask, json.load(open(tmp_path / "history.json"))


def test_awt_no_kernel_search_drops_the_kernel_term(tmp_path):
  """A real (tiny) search: loss = target + λ/d · L2, the kernel only reported."""
  s, mask, history = _tiny_search(tmp_path, "awt_no_kernel")
  assert [row["step"] for row in history] == [1, 2, 3, 4]
  for row in history:
    assert row["kernel_distance"] > 0  # Computed and reported, not used:
    assert row["loss"] == pytest.approx(
        row["target_distance"] + s.search.l2_weight / row["density"] * row["l2"],
        rel=1e-5)
  kept = np.asarray(mask["Dense_0"]["kernel"]).mean()
  assert kept == pytest.approx(0.5, abs=0.02)


def test_default_model_is_the_awt_ticket():
  methods = ("dense", "random", "ntt", "awt")
  assert train.default_model(methods, methods) == "awt"
  assert train.default_model(methods, ("dense", "random", "ntt")) == "ntt"
  assert train.default_model(("dense", "random"), ("dense", "random")) == "random"
  assert train.default_model(methods, ()) is None


def test_resolve_reads_the_config_once_into_typed_settings():
  c = config_schema.get_config()
  c.search.num_samples, c.eval.step_size, c.eval.num_examples = 0, -1.0, -1
  s = settings.resolve(c)
  assert s.search.num_samples is None and s.eval.step_size is None
  assert s.eval.num_examples is None and s.eval.attacks == ("pgd", "apgd_ce")
  assert s.config_json == json.loads(c.to_json_best_effort())
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.search.density = 0.5
  c.search.density = 2.0
  with pytest.raises(cv.ConfigError, match="search.density"):
    settings.resolve(c)


def test_settings_from_an_older_workdir_config_take_new_defaults():
  old = config_schema.get_config().to_dict()
  del old["search"]["kernel_period"], old["eval"]["validation"]
  s = settings.from_saved(json.loads(json.dumps(old)))
  assert s.search.kernel_period == 1 and s.eval.validation is True


def _evaluation(validation=True):
  test = {"natural_accuracy": 0.9, "robust_accuracy": 0.5,
          "robust_accuracy_per_attack": {"pgd50": 0.6, "apgd_ce": 0.55},
          "epsilon": 0.3, "norm": "linf", "num_examples": 10,
          "per_class_accuracy": {}}
  val = dict(test, robust_accuracy_per_attack={"pgd50": 0.7}, num_examples=5)
  return {"split": "test", "reported": test, "validation": val if validation else None}


def test_results_row_carries_threat_model_and_validation():
  s = settings.resolve(config_schema.get_config())
  params = {"Dense_0": {"kernel": np.ones((2, 2), np.float32),
                        "bias": np.ones(2, np.float32)}}
  row = results.model_row(s, _evaluation(), mask=None, params=params,
                          dataset_domain=(0.0, 1.0), search_info=None, curve=[])
  assert row["threat_model"] == {
      "norm": "linf", "epsilon": 0.3, "units": "pixels",
      "attacks": [{"name": "pgd", "steps": 50, "restarts": 1},
                  {"name": "apgd_ce", "steps": 100, "restarts": 1}]}
  assert row["robust_accuracy"] == {"pgd50": 0.6, "apgd_ce": 0.55}
  assert row["robust_accuracy_all_attacks"] == 0.5 and row["density"] == 1.0
  assert row["split"] == "test"
  assert row["validation"] == {"natural_accuracy": 0.9,
                               "robust_accuracy": {"pgd50": 0.7}, "num_examples": 5}
  # evaluate's own threat model wins; no validation split, no key.
  ev = _evaluation(validation=False)
  ev["reported"]["threat_model"] = {"norm": "linf", "epsilon": 0.3, "units": "pixels",
                                "attacks": []}
  row = results.model_row(s, ev, mask=None, params=params, dataset_domain=None,
                          search_info={"wall_s": 2.0}, curve=[])
  assert row["threat_model"]["attacks"] == [] and "validation" not in row
  assert row["search_wall_s"] == 2.0


def test_runner_passes_kernel_period_and_teacher_cache_to_the_search(tmp_path):
  _, mask, history = _tiny_search(tmp_path, "awt", kernel_period=2,
                                  teacher_cache=True)
  # Metrics are read at the steps that compute the kernel term (1 and 3 of
  # 4, log_every_steps = 1 rounded up to the period), and at the last one.
  assert [row["step"] for row in history] == [1, 3, 4]
  assert [row["kernel_computed"] for row in history] == [1, 1, 0]
  # Epoch 2 (steps 3-4) revisits every example: all served from the cache.
  assert [row["teacher_cache_hits"] for row in history] == [0, 1, 1]
  assert np.asarray(mask["Dense_0"]["kernel"]).mean() == pytest.approx(0.5, abs=0.02)
