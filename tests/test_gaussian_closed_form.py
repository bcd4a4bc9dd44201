"""The closed-form test of the attacks (paper App. C.1; see gaussian_toy.py).

For `sign(wᵀx)` on `x ~ N(±μ, σ²I)` the robust accuracy under ‖δ‖₂ ≤ ε is
`Φ((‖μ‖ cos θ − ε)/σ)`: an exact attack must match it up to sampling error,
a weak attack overestimates it. Adversarial training of a linear model must
turn `w` towards μ (paper Table 3: cos 0.850 standard vs 0.980 adversarial).
μ lives on its first 10 coordinates, so a 10-weight ticket can reach the
Bayes direction, and the AWT search (with `configs/toy_gaussian.py`'s
settings) must find those coordinates (benchmarks/toy_table3.py).
"""
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scalable_awt import adversarial_training as at
from scalable_awt import attacks
from scalable_awt import config_schema
from scalable_awt import config_validation
from scalable_awt import data as data_lib
from scalable_awt import gaussian_toy as gt
from scalable_awt import masks
from scalable_awt import models
from scalable_awt import search_phase
from scalable_awt import ticket_search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 20_000
SIGMA = 1.0
MU = gt.mean_vector(gt.DIM, gt.MU_OVER_SIGMA * SIGMA, gt.SUPPORT)
EPS_L2 = gt.EPS_OVER_SIGMA * SIGMA
EPS_LINF = EPS_L2 / np.sqrt(gt.DIM)
ANGLES = (0.0, 0.202, 0.555, 1.0)  # Bayes, Table 3's AT and SVM, far off.


@functools.lru_cache(maxsize=None)
def _data():
  return gt.sample(jax.random.key(2022), N, MU, SIGMA)


@functools.lru_cache(maxsize=None)
def _robust_accuracy_fn(attack: str, norm: str, random_start: bool):
  """One jitted `(w, key) -> robust accuracy` per attack configuration."""
  eps = EPS_L2 if norm == "l2" else EPS_LINF

  @jax.jit
  def run(w, key, x, y):  # Data as arguments: no constant folding of 2M numbers.
    params = {"w": w}
    if attack == "pgd":
      # Without a random start every step moves along −s·w/‖w‖, which reaches
      # the exact worst case; with one, step size ε shrinks the random
      # orthogonal part geometrically (halving per step).
      step = 2.5 * eps / 20 if not random_start else eps
      x_adv = attacks.pgd(gt.linear_apply_fn, params, x, y, key=key,
                          epsilon=eps, step_size=step, num_steps=20,
                          norm=norm, random_start=random_start, domain=None)
    elif attack == "pgd_margin":
      x_adv = attacks.pgd(gt.linear_apply_fn, params, x, y, key=key,
                          epsilon=eps, step_size=eps, num_steps=20,
                          norm=norm, random_start=random_start, loss="margin",
                          domain=None)
    else:
      x_adv = attacks.apgd_ce(gt.linear_apply_fn, params, x, y, key=key,
                              epsilon=eps, num_steps=50, norm=norm,
                              domain=None, random_start=random_start)
    return jnp.mean(jnp.argmax(gt.linear_apply_fn(params, x_adv), -1) == y)

  return run


@pytest.mark.parametrize("attack,norm,random_start", [
    ("pgd", "l2", False), ("pgd", "l2", True), ("pgd_margin", "l2", True),
    ("apgd_ce", "l2", True), ("pgd", "linf", True), ("apgd_ce", "linf", True),
])
def test_attack_matches_closed_form_robust_accuracy(attack, norm,
                                                    random_start):
  run = _robust_accuracy_fn(attack, norm, random_start)
  eps = EPS_L2 if norm == "l2" else EPS_LINF
  for i, theta in enumerate(ANGLES):
    w = gt.rotate_towards(MU, theta, jax.random.key(i))
    x, y = _data()
    measured = float(run(jnp.asarray(w), jax.random.key(10 + i), x, y))
    expected = gt.closed_form_robust_accuracy(w, MU, SIGMA, eps, norm)
    se = gt.standard_error(expected, N)
    assert abs(measured - expected) <= 4 * se, (theta, measured, expected)
    # Sharper: the exact worst case on this very sample (20 of 20,000 points
    # of slack for float32 rounding at the decision boundary).
    exact = gt.empirical_robust_accuracy(w, x, y, eps, norm)
    assert abs(measured - exact) <= 1e-3, (theta, measured, exact)


def test_natural_accuracy_matches_closed_form():
  x, y = _data()
  for i, theta in enumerate(ANGLES):
    w = gt.rotate_towards(MU, theta, jax.random.key(i))
    assert gt.cos_angle(w, MU) == pytest.approx(np.cos(theta), abs=1e-6)
    acc = float(jnp.mean(jnp.argmax(gt.linear_apply_fn({"w": w}, x), -1) == y))
    expected = gt.closed_form_accuracy(w, MU, SIGMA)
    assert abs(acc - expected) <= 4 * gt.standard_error(expected, N) + 1e-4


def test_closed_forms_reproduce_paper_table3():
  """Table 3's robust accuracies from its cosines with ‖μ‖/σ = 3.09, ε/σ = 2.08."""
  table = {1.0: 0.843, 0.850: 0.714, 0.980: 0.823, 0.993: 0.838}
  for cos, robust in table.items():
    w = gt.rotate_towards(MU, float(np.arccos(cos)), jax.random.key(0))
    assert gt.closed_form_robust_accuracy(w, MU, SIGMA, EPS_L2) == \
        pytest.approx(robust, abs=0.01)
  assert gt.closed_form_accuracy(MU, MU, SIGMA) == pytest.approx(0.999,
                                                                 abs=1e-3)


def _train_linear(epsilon, steps, x, y):
  model = gt.LinearClassifier()
  params = model.init(jax.random.key(0), x[:2])["params"]
  tx = at.make_optimizer(name="adam", learning_rate=0.05, total_steps=steps)
  state = at.create_train_state(params, {}, tx)
  step = jax.jit(at.make_train_step(
      model, tx, epsilon=epsilon, step_size=max(epsilon, 1e-3) / 2,
      num_steps=5, norm="l2", domain=None))
  batch = {"image": x, "label": y}
  for i in range(steps):
    state, _ = step(state, batch, jax.random.key(i))
  return np.asarray(state.params["Dense_0"]["kernel"]).ravel()


def test_adversarial_training_turns_w_towards_mu():
  x, y = gt.sample(jax.random.key(7), gt.NUM_POINTS, MU, SIGMA)
  w_nat = _train_linear(0.0, 300, x, y)
  w_adv = _train_linear(EPS_L2, 150, x, y)
  cos_nat, cos_adv = gt.cos_angle(w_nat, MU), gt.cos_angle(w_adv, MU)
  assert cos_adv > cos_nat, (cos_adv, cos_nat)
  assert cos_adv > 0.98
  assert gt.closed_form_robust_accuracy(w_adv, MU, SIGMA, EPS_L2) > \
      gt.closed_form_robust_accuracy(w_nat, MU, SIGMA, EPS_L2)


# ------------------------------------------------------------ the sparse mean


def test_mean_vector_is_sparse_with_the_right_norm():
  assert gt.SUPPORT == 10 and MU.shape == (gt.DIM,)
  np.testing.assert_allclose(np.linalg.norm(MU), gt.MU_OVER_SIGMA, rtol=1e-6)
  np.testing.assert_allclose(MU[:10], gt.MU_OVER_SIGMA / np.sqrt(10),
                             rtol=1e-6)
  assert np.all(MU[10:] == 0)
  for support in (0, gt.DIM):  # Both spread μ over every coordinate.
    mu = gt.mean_vector(gt.DIM, 2.0, support)
    np.testing.assert_allclose(mu, 2.0 / np.sqrt(gt.DIM), rtol=1e-6)
  mu = gt.mean_vector(20, 2.0, 3)
  assert np.count_nonzero(mu) == 3 and np.linalg.norm(mu) == \
      pytest.approx(2.0)
  for bad in (-1, 21):
    with pytest.raises(ValueError, match="support"):
      gt.mean_vector(20, 2.0, bad)


def test_ten_weights_reach_bayes_only_on_the_support():
  """Why μ must be sparse: with a spread μ no 10-weight w has cos > √0.1."""
  w = np.zeros(gt.DIM, np.float32)
  w[:10] = 1.0
  assert gt.cos_angle(w, MU) == pytest.approx(1.0)
  assert gt.support_recall(w, MU) == 1.0
  assert gt.cos_angle(np.roll(w, 10), MU) == 0.0
  spread = gt.mean_vector(gt.DIM, gt.MU_OVER_SIGMA, 0)
  best = np.zeros(gt.DIM)
  best[:10] = spread[:10]  # The best 10-sparse direction for a spread μ.
  assert gt.cos_angle(best, spread) == pytest.approx(np.sqrt(0.1))


def test_sparse_classifiers_match_closed_form():
  """Natural and exact L2-robust accuracy of 10-weight classifiers: sampled
  on 20,000 points, within 4 standard errors of the closed forms."""
  x, y = _data()
  rng = np.random.default_rng(0)
  for kept in (10, 7, 3):  # Support coordinates among the 10 weights.
    w = np.zeros(gt.DIM)
    w[:kept] = 1.0 + 0.3 * rng.standard_normal(kept)
    w[10:20 - kept] = 0.5 * rng.standard_normal(10 - kept)
    assert np.count_nonzero(w) == 10
    for eps in (0.0, EPS_L2):
      expected = gt.closed_form_robust_accuracy(w, MU, SIGMA, eps)
      measured = gt.empirical_robust_accuracy(w, x, y, eps)
      assert abs(measured - expected) <= 4 * gt.standard_error(expected, N), \
          (kept, eps, measured, expected)


def test_runner_data_has_the_sparse_mean():
  cfg = config_schema.get_config().data
  cfg.name = "gaussian_toy"
  ds = data_lib.load(cfg, seed=0)
  s = 2.0 * ds.train_labels - 1.0
  mean = (s[:, None] * ds.train_images).mean(0)  # Estimates μ.
  assert cfg.toy_support == gt.SUPPORT
  np.testing.assert_allclose(mean[:10], MU[:10], atol=0.06)
  np.testing.assert_allclose(mean[10:], 0.0, atol=0.06)
  cfg.toy_support = 0  # The spread mean.
  ds = data_lib.load(cfg, seed=0)
  mean = ((2.0 * ds.train_labels - 1.0)[:, None] * ds.train_images).mean(0)
  np.testing.assert_allclose(mean, gt.MU_OVER_SIGMA / 10, atol=0.06)


@pytest.mark.parametrize("value", [-1, 101, 2.5, True, "10"])
def test_toy_support_is_validated(value):
  c = config_schema.get_config().to_dict()  # A dict: no type-safe casting.
  c["data"]["toy_support"] = value
  with pytest.raises(config_validation.ConfigError,
                     match=r"config\.data\.toy_support=.*toy_dim"):
    config_validation.validate(c)


def test_toy_support_may_be_zero_or_toy_dim():
  c = config_schema.get_config()
  for value in (0, 100):
    c.data.toy_support = value
    config_validation.validate(c)
  c.data.toy_dim = 20
  c.data.toy_support = 21
  with pytest.raises(config_validation.ConfigError, match="toy_support=21"):
    config_validation.validate(c)


def test_linear_classifier_starts_random_not_at_a_tie():
  """A zero start makes every magnitude score a tie, and the stable top-k
  would hand a search the first coordinates: μ's support, for free."""
  params, _ = models.init_model(gt.LinearClassifier(), jax.random.key(0),
                                (1, gt.DIM))
  w = np.asarray(params["Dense_0"]["kernel"]).ravel()
  assert np.all(w != 0) and 0.05 < w.std() < 0.2  # LeCun normal: 1/√d.
  mask = masks.topk_mask(jax.tree.map(jnp.abs, params), 0.1)
  assert gt.support_recall(np.asarray(mask["Dense_0"]["kernel"]).ravel(),
                           MU) < 1.0


def _toy_config():
  path = os.path.join(ROOT, "configs", "toy_gaussian.py")
  spec = importlib.util.spec_from_file_location("toy_gaussian", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _search_recalls(config, epsilon, seeds, epochs=5):
  """Runs the AWT/NTT search with the config's settings from each seed's
  initialisation and data; returns the share of μ's support in each mask."""
  model = gt.LinearClassifier()
  bs = int(config.search.batch_size)
  total = epochs * (config.data.toy_num_train // bs)
  settings = search_phase.search_settings(config, epsilon=epsilon,
                                          total_steps=total, domain=None)
  tx = optax.adam(float(config.search.learning_rate))
  apply_fn = models.make_apply_fn(model, {})
  step = jax.jit(ticket_search.make_search_step(apply_fn, tx, settings))
  recalls = []
  for seed in seeds:
    ds = data_lib.load(config.data, seed=seed)
    params, _ = models.init_model(model, jax.random.key(seed), (1, gt.DIM))
    state = ticket_search.init_search_state(params, tx, settings)
    rng = np.random.default_rng(seed)
    for i in range(total):
      idx = rng.integers(0, len(ds.train_labels), bs)
      batch = {"image": ds.train_images[idx], "label": ds.train_labels[idx]}
      state, _ = step(state, batch, jax.random.key(i))
    mask = ticket_search.final_mask(state, settings)
    recalls.append(gt.support_recall(
        np.asarray(mask["Dense_0"]["kernel"]).ravel(), MU))
  return recalls


def test_awt_search_finds_the_support_ntt_does_not():
  """With the toy config's search settings the adversarial search keeps μ's
  10 coordinates; the same search with ε = 0 (NTT) does not."""
  config = _toy_config()
  assert config.data.toy_support == gt.SUPPORT
  assert config.search.density == 0.1
  eps = float(config.attack.epsilon)
  assert _search_recalls(config, eps, (0, 1)) == [1.0, 1.0]
  assert max(_search_recalls(config, 0.0, (0, 1))) <= 0.5
