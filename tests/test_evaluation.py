"""`evaluate`: numbers consistent with each other, JSON-ready, one compile."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adv_toys import digits_data, trained_digits_mlp
from scalable_awt import evaluation


def _data(n=200):
  _, (x, y) = digits_data()
  return x[:n], y[:n]


@pytest.fixture(scope="module")
def digits_mlp():
  """The naturally trained digits MLP of `adv_toys` (trained once, cached)."""
  return trained_digits_mlp()


def test_result_structure_and_consistency(digits_mlp):
  apply_fn, params = digits_mlp
  x, y = _data()
  suite = ("pgd", "apgd_ce", "apgd_t", "square", "fgsm", "cw")
  res = evaluation.evaluate(apply_fn, params, x, y, key=jax.random.key(0),
                            epsilon=0.08, attacks=suite, pgd_steps=10,
                            pgd_restarts=2, apgd_steps=10, apgd_t_targets=3,
                            square_queries=100, batch_size=64)
  json.dumps(res)  # JSON-ready: plain floats, ints, lists, None.
  assert res["num_examples"] == 200
  natural = float(np.mean(np.asarray(jnp.argmax(apply_fn(params, x), -1)) == y))
  assert res["natural_accuracy"] == pytest.approx(natural)
  per_attack = res["robust_accuracy_per_attack"]
  assert set(per_attack) == {"pgd10", "apgd_ce", "apgd_t", "square", "fgsm",
                             "cw10"}
  for v in per_attack.values():
    assert 0.0 <= v <= res["natural_accuracy"] + 1e-9
  # The per-example worst case over the suite: at most every attack, and
  # (union bound) at least natural minus the sum of what each attack took.
  worst = res["robust_accuracy_all_attacks"]
  assert worst == res["robust_accuracy"]
  assert worst <= min(per_attack.values()) + 1e-9
  assert worst >= natural - sum(natural - v for v in per_attack.values()) - 1e-9
  assert worst < res["natural_accuracy"] - 0.1
  # The threat model states every attack as it was run.
  tm = res["threat_model"]
  assert (tm["norm"], tm["epsilon"], tm["units"]) == ("linf", 0.08, "pixels")
  specs = {a["name"]: a for a in tm["attacks"]}
  assert [a["name"] for a in tm["attacks"]] == list(suite)
  assert {a["key"] for a in tm["attacks"]} == set(per_attack)
  assert (specs["pgd"]["steps"], specs["pgd"]["restarts"]) == (10, 2)
  assert specs["pgd"]["step_size"] == pytest.approx(2.5 * 0.08 / 10)
  assert (specs["apgd_ce"]["steps"], specs["apgd_ce"]["restarts"]) == (10, 2)
  assert (specs["apgd_t"]["steps"], specs["apgd_t"]["restarts"],
          specs["apgd_t"]["targets"]) == (10, 1, 3)
  assert (specs["square"]["queries"], specs["square"]["restarts"]) == (100, 1)
  assert all(isinstance(a["steps"], int) for a in tm["attacks"])
  assert specs["cw"]["loss"] == "margin" and specs["fgsm"]["steps"] == 1
  # Per-class numbers average back to the totals.
  counts = np.bincount(y, minlength=10)
  for name, values in res["per_class_accuracy"].items():
    total = {"natural": res["natural_accuracy"],
             "worst": res["robust_accuracy"]}.get(name, per_attack.get(name))
    assert len(values) == 10
    weighted = sum(c * v for c, v in zip(counts, values) if v is not None)
    assert weighted / counts.sum() == pytest.approx(total)
  flat = evaluation.flatten_metrics(res)
  assert flat["robust_accuracy/pgd10"] == per_attack["pgd10"]
  assert "natural_accuracy/class_3" in flat


def test_batching_and_padding_do_not_change_natural_accuracy():
  apply_fn, params = trained_digits_mlp()
  x, y = _data(150)
  a = evaluation.evaluate(apply_fn, params, x, y, key=jax.random.key(0),
                          epsilon=0.05, pgd_steps=5, batch_size=150)
  b = evaluation.evaluate(apply_fn, params, x, y, key=jax.random.key(0),
                          epsilon=0.05, pgd_steps=5, batch_size=64)
  assert a["natural_accuracy"] == b["natural_accuracy"]
  assert abs(a["robust_accuracy"] - b["robust_accuracy"]) < 0.05


def test_compiles_once_for_all_batches():
  apply_fn, params = trained_digits_mlp()
  traces = []

  def counting_apply_fn(p, x):
    traces.append(x.shape)
    return apply_fn(p, x)

  x, y = _data(200)
  evaluation.evaluate(counting_apply_fn, params, x[:64], y[:64],
                      key=jax.random.key(0), epsilon=0.05, pgd_steps=5,
                      batch_size=64, num_classes=10)
  one_batch = len(traces)
  traces.clear()
  evaluation.evaluate(counting_apply_fn, params, x, y, key=jax.random.key(0),
                      epsilon=0.05, pgd_steps=5, batch_size=64,
                      num_classes=10)  # 4 batches, the last one padded.
  assert len(traces) == one_batch


def test_epsilon_zero_and_large_epsilon():
  apply_fn, params = trained_digits_mlp()
  x, y = _data(128)
  res = evaluation.evaluate(apply_fn, params, x, y, key=jax.random.key(0),
                            epsilon=0.0, attacks=("pgd", "apgd_ce"))
  assert res["robust_accuracy"] == res["natural_accuracy"]
  assert set(res["robust_accuracy_per_attack"].values()) == {
      res["natural_accuracy"]}
  res = evaluation.evaluate(apply_fn, params, x, y, key=jax.random.key(0),
                            epsilon=0.5, pgd_steps=10, batch_size=128)
  assert res["robust_accuracy"] <= 0.01
  # Default step size 2.5 ε / steps reaches the boundary; L2 works too.
  res = evaluation.evaluate(apply_fn, params, x, y, key=jax.random.key(0),
                            epsilon=5.0, norm="l2", pgd_steps=10,
                            batch_size=128)
  assert res["robust_accuracy"] <= 0.01


def test_more_restarts_never_raise_robust_accuracy():
  apply_fn, params = trained_digits_mlp()
  x, y = _data(128)
  accs = [evaluation.evaluate(apply_fn, params, x, y, key=jax.random.key(0),
                              epsilon=0.06, pgd_steps=5, pgd_restarts=r,
                              batch_size=128)["robust_accuracy"]
          for r in (1, 3)]
  assert accs[1] <= accs[0]


def test_missing_classes_are_none_and_bad_arguments_raise():
  apply_fn, params = trained_digits_mlp()
  x, y = _data(200)
  keep = y != 7
  res = evaluation.evaluate(apply_fn, params, x[keep], y[keep],
                            key=jax.random.key(0), epsilon=0.0)
  assert res["per_class_accuracy"]["natural"][7] is None
  json.dumps(res)
  for kwargs in (dict(attacks=("deepfool",)), dict(epsilon=-1.0),
                 dict(norm="l1"), dict(batch_size=0), dict(pgd_steps=0),
                 dict(attacks=("pgd", "pgd"))):
    args = dict(key=jax.random.key(0), epsilon=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError):
      evaluation.evaluate(apply_fn, params, x, y, **args)
  with pytest.raises(ValueError):
    evaluation.evaluate(apply_fn, params, x, y + 5, key=jax.random.key(0),
                        epsilon=0.1)
  for kwargs in (dict(attacks=("square",), norm="l2"),
                 dict(attacks=("apgd_t",), apgd_t_targets=0),
                 dict(attacks=("square",), square_queries=0),
                 dict(pgd_restarts=1.5)):
    with pytest.raises(ValueError):
      evaluation.evaluate(apply_fn, params, x, y, key=jax.random.key(0),
                          epsilon=0.1, **kwargs)


def test_threat_model_units_and_epsilon_zero():
  """Units follow the domain; with ε = 0 nothing runs but the suite is still
  stated, and APGD-T's targets are capped at C − 1."""
  apply_fn, params = trained_digits_mlp()
  x, y = _data(32)
  res = evaluation.evaluate(apply_fn, params, x, y, key=jax.random.key(0),
                            epsilon=0.0, attacks=("apgd_t", "square"),
                            apgd_t_targets=50, domain=None)
  tm = res["threat_model"]
  assert tm["units"] == "input units" and tm["domain"] is None
  assert tm["attacks"][0]["targets"] == 9
  assert res["robust_accuracy_all_attacks"] == res["natural_accuracy"]
