"""The closed-form test of the attacks (paper App. C.1; see gaussian_toy.py).

For `sign(wᵀx)` on `x ~ N(±μ, σ²I)` the robust accuracy under ‖δ‖₂ ≤ ε is
`Φ((‖μ‖ cos θ − ε)/σ)`: an exact attack must match it up to sampling error,
a weak attack overestimates it. Adversarial training of a linear model must
turn `w` towards μ (paper Table 3: cos 0.850 standard vs 0.980 adversarial).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalable_awt import adversarial_training as at
from scalable_awt import attacks
from scalable_awt import gaussian_toy as gt

N = 20_000
SIGMA = 1.0
MU = gt.mean_vector(gt.DIM, gt.MU_OVER_SIGMA * SIGMA)
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
