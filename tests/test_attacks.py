"""Tests that catch a broken or weak attack (Carlini et al. 2019, "On evaluating
adversarial robustness"): the threat model is respected, large ε breaks the
model, more steps/restarts never help the defender, PGD beats FGSM and random
noise, and per-example geometry does not leak across the batch."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adv_toys import digits_data, linear_two_class, trained_digits_mlp
from scalable_awt import attacks

ATOL = 1e-5  # float32 rounding of x + δ − x.


@functools.lru_cache(maxsize=None)
def _test_set(n=256):
  _, (x, y) = digits_data()
  return jnp.asarray(x[:n]), jnp.asarray(y[:n])


def _accuracy(apply_fn, params, x, y):
  return float(jnp.mean(jnp.argmax(apply_fn(params, x), -1) == y))


def _correct(apply_fn, params, x, y):
  return np.asarray(jnp.argmax(apply_fn(params, x), -1) == y)


class _TinyCNN(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def _cnn():
  model = _TinyCNN()
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  return (lambda p, x: model.apply({"params": p}, x)), params


def _run(name, apply_fn, params, x, y, *, key, epsilon, norm, loss="ce",
         num_steps=10, domain=(0.0, 1.0)):
  step_size = 2.5 * epsilon / num_steps
  if name == "pgd":
    return attacks.pgd(apply_fn, params, x, y, key=key, epsilon=epsilon,
                       step_size=step_size, num_steps=num_steps, norm=norm,
                       loss=loss, domain=domain)
  if name == "pgd_last":
    return attacks.pgd_last_iterate(
        apply_fn, params, x, y, key=key, epsilon=epsilon, step_size=step_size,
        num_steps=num_steps, norm=norm, loss=loss, domain=domain)
  if name == "apgd_ce":
    return attacks.apgd_ce(apply_fn, params, x, y, key=key, epsilon=epsilon,
                           num_steps=num_steps, norm=norm, domain=domain,
                           loss=loss)
  if name == "apgd_t":
    return attacks.apgd_t(apply_fn, params, x, y, key=key, epsilon=epsilon,
                          num_steps=num_steps, num_targets=3, norm=norm,
                          domain=domain)
  if name == "square":
    return attacks.square(apply_fn, params, x, y, key=key, epsilon=epsilon,
                          num_queries=10 * num_steps, norm=norm,
                          domain=domain)
  if name == "fgsm":
    return attacks.fgsm(apply_fn, params, x, y, epsilon=epsilon, norm=norm,
                        loss=loss, domain=domain)
  if name == "worst_case":
    return attacks.worst_case(attacks.pgd, apply_fn, params, x, y, key=key,
                              num_restarts=3, epsilon=epsilon,
                              step_size=step_size, num_steps=num_steps,
                              norm=norm, loss=loss, domain=domain)
  raise AssertionError(name)


# Square is L∞ only (test_square_rejects_l2); APGD-T's L∞ ball is checked by
# test_gradient_attacks_match_the_linear_closed_form (compiles are slow).
@pytest.mark.parametrize("name,rank,norm,epsilon", [
    (name, rank, norm, epsilon)
    for name, rank in [
        ("pgd", "flat"), ("pgd_last", "flat"), ("apgd_ce", "flat"),
        ("fgsm", "flat"), ("worst_case", "flat"),
        ("pgd", "nhwc"), ("apgd_ce", "nhwc"), ("apgd_t", "nhwc"),
        ("square", "nhwc"), ("fgsm", "nhwc")]
    for norm, epsilon in [("linf", 0.1), ("l2", 1.0)]
    if (name, norm) not in (("square", "l2"), ("apgd_t", "linf"))])
def test_attack_stays_in_ball_and_domain(name, rank, norm, epsilon):
  x, y = _test_set(64)
  if rank == "flat":
    apply_fn, params = trained_digits_mlp()
  else:
    apply_fn, params = _cnn()
    x = x.reshape((-1, 8, 8, 1))
  loss = "margin" if name == "pgd" else "ce"
  x_adv = jax.jit(functools.partial(
      _run, name, apply_fn, key=jax.random.key(0), epsilon=epsilon, norm=norm,
      loss=loss))(params, x, y)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  dist = attacks.per_example_norm(x_adv - x, norm)
  assert float(dist.max()) <= epsilon + ATOL
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  # A working attack uses its budget: most perturbations are far from 0.
  if name == "square":
    # Square returns misclassified inputs unchanged (the untrained CNN gets
    # most wrong); only the examples it had to attack count.
    dist = dist[_correct(apply_fn, params, x, y)]
  assert float(jnp.median(dist)) > 0.5 * epsilon


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_unbounded_domain_and_custom_box(norm):
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set(32)
  for domain in (None, (0.2, 0.8)):
    x_in = x if domain is None else jnp.clip(x, *domain)
    x_adv = attacks.pgd(apply_fn, params, x_in, y, key=jax.random.key(1),
                        epsilon=2.0, step_size=0.5, num_steps=5, norm=norm,
                        domain=domain)
    assert float(attacks.per_example_norm(x_adv - x_in, norm).max()) <= 2.0 + ATOL
    if domain is not None:
      assert x_adv.min() >= np.float32(0.2) and x_adv.max() <= np.float32(0.8)
    else:
      assert float(x_adv.min()) < 0.0 or float(x_adv.max()) > 1.0


@pytest.mark.parametrize("name", ["pgd", "apgd_ce"])
@pytest.mark.parametrize("norm,epsilon", [("linf", 0.5), ("l2", 5.0)])
def test_large_epsilon_breaks_the_model(name, norm, epsilon):
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set()
  assert _accuracy(apply_fn, params, x, y) > 0.9
  x_adv = _run(name, apply_fn, params, x, y, key=jax.random.key(0),
               epsilon=epsilon, norm=norm, num_steps=20)
  assert _accuracy(apply_fn, params, x_adv, y) <= 0.01


@pytest.mark.parametrize("name", ["pgd", "apgd_ce"])
def test_epsilon_zero_returns_inputs(name):
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set(16)
  for norm in ("linf", "l2"):
    x_adv = _run(name, apply_fn, params, x, y, key=jax.random.key(0),
                 epsilon=0.0, norm=norm)
    np.testing.assert_array_equal(np.asarray(x_adv), np.asarray(x))


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.08), ("l2", 0.8)])
def test_more_steps_never_raise_robust_accuracy(norm, epsilon):
  """Same key and step size: the iterates of the short run are a prefix of
  the long run's, and `pgd` keeps the worst point, so the set of fooled
  examples can only grow."""
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set()
  fooled_before = None
  accs = []
  for steps in (1, 3, 10, 30):
    x_adv = attacks.pgd(apply_fn, params, x, y, key=jax.random.key(7),
                        epsilon=epsilon, step_size=epsilon / 8,
                        num_steps=steps, norm=norm)
    fooled = ~_correct(apply_fn, params, x_adv, y)
    if fooled_before is not None:
      assert np.all(fooled[fooled_before])
    fooled_before = fooled
    accs.append(1.0 - fooled.mean())
  assert accs[-1] < accs[0]  # The steps do something.


@pytest.mark.parametrize("attack_fn,kwargs,restart_counts", [
    (attacks.pgd, dict(step_size=0.02, num_steps=5), (1, 2, 5)),
    (attacks.apgd_ce, dict(num_steps=5), (1, 3)),
])
def test_more_restarts_never_raise_robust_accuracy(attack_fn, kwargs,
                                                   restart_counts):
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set()
  fooled_before = None
  for restarts in restart_counts:
    x_adv = attacks.worst_case(attack_fn, apply_fn, params, x, y,
                               key=jax.random.key(3), num_restarts=restarts,
                               epsilon=0.08, **kwargs)
    fooled = ~_correct(apply_fn, params, x_adv, y)
    if fooled_before is not None:
      assert np.all(fooled[fooled_before])
    fooled_before = fooled


def test_worst_case_picks_the_worst_restart():
  """Every restart's own result: fooled by worst_case iff fooled by any."""
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set()
  key, kw = jax.random.key(11), dict(epsilon=0.08, step_size=0.02, num_steps=3)
  fooled_any = np.zeros(x.shape[0], bool)
  for r in range(3):
    x_r = attacks.pgd(apply_fn, params, x, y, key=jax.random.fold_in(key, r),
                      **kw)
    fooled_any |= ~_correct(apply_fn, params, x_r, y)
  x_adv = attacks.worst_case(attacks.pgd, apply_fn, params, x, y, key=key,
                             num_restarts=3, **kw)
  np.testing.assert_array_equal(~_correct(apply_fn, params, x_adv, y),
                                fooled_any)


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.08), ("l2", 0.8)])
def test_pgd_beats_fgsm_and_random_noise(norm, epsilon):
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set()
  key = jax.random.key(0)
  acc_pgd = _accuracy(apply_fn, params, attacks.pgd(
      apply_fn, params, x, y, key=key, epsilon=epsilon,
      step_size=2.5 * epsilon / 20, num_steps=20, norm=norm), y)
  acc_apgd = _accuracy(apply_fn, params, attacks.apgd_ce(
      apply_fn, params, x, y, key=key, epsilon=epsilon, num_steps=20,
      norm=norm), y)
  acc_fgsm = _accuracy(apply_fn, params, attacks.fgsm(
      apply_fn, params, x, y, epsilon=epsilon, norm=norm), y)
  # Random noise of the same norm, on the sphere / at the cube's corners.
  if norm == "linf":
    noise = epsilon * jnp.sign(jax.random.normal(key, x.shape))
  else:
    noise = jax.random.normal(key, x.shape)
    noise = epsilon * noise / attacks.per_example_norm(noise, "l2")[:, None]
  acc_noise = _accuracy(apply_fn, params, jnp.clip(x + noise, 0, 1), y)
  acc_clean = _accuracy(apply_fn, params, x, y)
  assert acc_pgd <= acc_fgsm
  assert acc_apgd <= acc_pgd + 0.02
  assert acc_noise - acc_pgd >= 0.3
  assert acc_noise > 0.8 * acc_clean  # The ε is "small" for random noise.


# APGD-T shares apgd_ce's iteration; its L2 case checks the per-example targets.
@pytest.mark.parametrize("name,norm", [
    (name, norm) for name in ("pgd", "apgd_ce", "apgd_t", "fgsm")
    for norm in ("linf", "l2") if (name, norm) != ("apgd_t", "linf")])
def test_examples_do_not_interact(name, norm):
  """Per-example norms and steps: attacking a batch equals attacking each
  example alone (catches batch-wide normalisation of steps or projections)."""
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set(8)
  eps = 0.1 if norm == "linf" else 1.0
  kw = dict(epsilon=eps, norm=norm)
  if name == "pgd":
    fn = functools.partial(attacks.pgd, step_size=eps / 4, num_steps=5,
                           random_start=False, **kw)
  elif name == "apgd_ce":
    fn = functools.partial(attacks.apgd_ce, num_steps=10, random_start=False,
                           **kw)
  elif name == "apgd_t":
    fn = functools.partial(attacks.apgd_t, num_steps=5, num_targets=2,
                           random_start=False, **kw)
  else:
    fn = functools.partial(attacks.fgsm, **kw)
  key = jax.random.key(0)
  run = jax.jit(lambda xs, ys: fn(apply_fn, params, xs, ys, key=key))
  together = run(x, y)
  alone = jnp.concatenate([run(x[i:i + 1], y[i:i + 1])
                           for i in range(x.shape[0])])
  np.testing.assert_allclose(np.asarray(together), np.asarray(alone),
                             atol=1e-5)


def test_deterministic_given_key():
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set(32)
  pgd = jax.jit(lambda k: attacks.pgd(apply_fn, params, x, y, key=k,
                                      epsilon=0.1, step_size=0.025,
                                      num_steps=5))
  apgd = jax.jit(lambda k: attacks.apgd_ce(apply_fn, params, x, y, key=k,
                                           epsilon=0.1, num_steps=5))
  apgd_t = jax.jit(lambda k: attacks.apgd_t(apply_fn, params, x, y, key=k,
                                            epsilon=0.1, num_steps=3,
                                            num_targets=2))
  square = jax.jit(lambda k: attacks.square(apply_fn, params, x, y, key=k,
                                            epsilon=0.1, num_queries=20))
  for fn in (pgd, apgd, apgd_t, square):
    a, b, c = fn(jax.random.key(0)), fn(jax.random.key(0)), fn(jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_inside_the_ball(norm):
  x = jnp.full((2000, 3), 0.5)
  x0 = attacks.random_init(jax.random.key(0), x, epsilon=0.3, norm=norm,
                           domain=(0.0, 1.0))
  r = np.asarray(attacks.per_example_norm(x0 - x, norm))
  assert r.max() <= 0.3 + ATOL
  if norm == "l2":
    # Uniform in a 3-ball: P(r <= ε/2) = 1/8.
    assert abs(np.mean(r <= 0.15) - 0.125) < 0.03
  else:
    d = np.asarray(x0 - x).ravel()
    assert abs(np.mean(np.abs(d) <= 0.15) - 0.5) < 0.03


def test_margin_loss_is_positive_iff_misclassified():
  logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.5, 1.2]])
  y = jnp.array([0, 0, 2])
  m = attacks.per_example_loss(logits, y, "margin")
  np.testing.assert_allclose(np.asarray(m), [-1.0, 3.0, 0.3], atol=1e-6)


def test_apgd_checkpoints_match_the_paper():
  # p_j = 0, .22, .41, .57, .70, .80, .87, .93, .99 for 100 iterations.
  assert attacks.apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
  assert attacks.apgd_checkpoints(1) == [1]


def test_invalid_arguments_raise():
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set(4)
  key = jax.random.key(0)
  base = dict(key=key, epsilon=0.1, step_size=0.01, num_steps=2)
  cases = [
      dict(base, norm="l1"),
      dict(base, loss="hinge"),
      dict(base, epsilon=-0.1),
      dict(base, step_size=-1.0),
      dict(base, num_steps=-1),
      dict(base, num_steps=2.5),
      dict(base, domain=(1.0, 0.0)),
      dict(base, domain="unit"),
  ]
  for kwargs in cases:
    with pytest.raises(ValueError):
      attacks.pgd(apply_fn, params, x, y, **kwargs)
  with pytest.raises(ValueError):
    attacks.pgd(apply_fn, params, x, y[:2], **base)
  with pytest.raises(ValueError):
    attacks.apgd_ce(apply_fn, params, x, y, key=key, epsilon=0.1, rho=1.5)
  with pytest.raises(ValueError):
    attacks.fgsm(apply_fn, params, x, y, epsilon=0.1, norm="l0")
  with pytest.raises(ValueError):
    attacks.worst_case(attacks.pgd, apply_fn, params, x, y, num_restarts=0,
                       **base)
  for kwargs in (dict(num_targets=0), dict(num_steps=0), dict(norm="l1"),
                 dict(momentum=2.0)):
    with pytest.raises(ValueError):
      attacks.apgd_t(apply_fn, params, x, y, key=key, epsilon=0.1, **kwargs)
  for kwargs in (dict(num_queries=0), dict(p_init=0.0), dict(epsilon=-1.0),
                 dict(domain=(1.0, 0.0))):
    with pytest.raises(ValueError):
      attacks.square(apply_fn, params, x, y, key=key, **{"epsilon": 0.1,
                                                         **kwargs})


# --------------------------------------------------------------------------
# APGD-T.
# --------------------------------------------------------------------------

def test_targeted_dlr_loss_matches_the_formula_and_is_scale_invariant():
  logits = jnp.array([[4.0, 1.0, 3.0, 0.0, 2.0], [0.0, 5.0, 1.0, 2.0, -1.0]])
  y, target = jnp.array([0, 3]), jnp.array([2, 1])
  # Sorted: (4, 3, 2, 1, 0) and (5, 2, 1, 0, -1).
  expected = [-(4.0 - 3.0) / (4.0 - (2.0 + 1.0) / 2),
              -(2.0 - 5.0) / (5.0 - (1.0 + 0.0) / 2)]
  loss = attacks.targeted_dlr_loss(logits, y, target)
  np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-6)
  np.testing.assert_allclose(
      np.asarray(attacks.targeted_dlr_loss(3.0 * logits - 7.0, y, target)),
      expected, rtol=1e-5)


def test_target_classes_are_the_most_likely_wrong_classes():
  logits = jnp.array([[4.0, 1.0, 3.0, 0.0, 2.0], [0.0, 5.0, 1.0, 2.0, -1.0]])
  targets = attacks.target_classes(logits, jnp.array([0, 1]), 3)
  np.testing.assert_array_equal(np.asarray(targets), [[2, 4, 1], [3, 2, 0]])


@pytest.fixture(scope="module")
def digits_mlp():
  """The naturally trained digits MLP of `adv_toys` (trained once, cached)."""
  return trained_digits_mlp()


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.08), ("l2", 0.8)])
def test_apgd_t_is_at_least_as_strong_as_pgd(digits_mlp, norm, epsilon):
  """Croce & Hein's claim, on a trained model: APGD-T with the same ε and
  number of steps (per target) leaves no more examples robust than PGD."""
  apply_fn, params = digits_mlp
  x, y = _test_set()
  steps, key = 20, jax.random.key(0)
  acc_pgd = _accuracy(apply_fn, params, attacks.pgd(
      apply_fn, params, x, y, key=key, epsilon=epsilon,
      step_size=2.5 * epsilon / steps, num_steps=steps, norm=norm), y)
  acc_apgd_t = _accuracy(apply_fn, params, attacks.apgd_t(
      apply_fn, params, x, y, key=key, epsilon=epsilon, num_steps=steps,
      norm=norm), y)
  assert acc_pgd < 0.9 * _accuracy(apply_fn, params, x, y)  # ε bites.
  # Tolerance 2/256: the attacks use different random starts, and the claim
  # is about strength, not about every single example.
  assert acc_apgd_t <= acc_pgd + 2 / 256


def test_apgd_t_with_one_target_attacks_the_most_likely_wrong_class():
  """APGD-T reuses the APGD iteration: with one target it is exactly APGD
  on the targeted DLR loss towards the most likely wrong class, with the
  first target's key."""
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set(64)
  kw = dict(key=jax.random.key(2), epsilon=0.1, num_steps=10)
  x_adv = attacks.apgd_t(apply_fn, params, x, y, num_targets=1, **kw)
  target = attacks.target_classes(apply_fn(params, x), y, 1)[:, 0]
  by_hand = attacks._apgd(
      apply_fn, params, x, y,
      loss_fn=lambda logits, y_: attacks.targeted_dlr_loss(logits, y_, target),
      norm="linf", domain=(0.0, 1.0), rho=0.75, momentum=0.75,
      initial_step=2.0, random_start=True,
      **dict(kw, key=jax.random.fold_in(kw["key"], 0)))
  np.testing.assert_allclose(np.asarray(x_adv), np.asarray(by_hand), atol=1e-6)


# --------------------------------------------------------------------------
# Square.
# --------------------------------------------------------------------------

def test_square_p_schedule_matches_the_paper():
  p = [float(attacks.square_p_schedule(i, 10000)) for i in
       (0, 10, 11, 50, 51, 200, 201, 500, 501, 1000, 1001, 2000, 2001, 4000,
        4001, 6000, 6001, 8000, 8001, 9999)]
  expected = [0.8, 0.8] + [0.8 / 2 ** k for k in range(1, 10)
                           for _ in range(2)]
  np.testing.assert_allclose(p, expected, rtol=1e-6)
  # Rescaled to shorter runs: half of 1000 queries is half of 10000.
  assert float(attacks.square_p_schedule(500, 1000)) == pytest.approx(
      float(attacks.square_p_schedule(5000, 10000)))


@pytest.mark.parametrize("dim", [16, 12])  # A 4x4 image; a 1x12 strip.
def test_square_finds_the_closed_form_adversarials_of_a_linear_model(dim):
  """For a linear 2-class model the L∞ worst case is known in closed form
  (`adv_toys.linear_two_class`). Square must fool exactly the examples whose
  worst-case margin is negative, and no attack can fool the others."""
  eps = 0.1
  apply_fn, params, x, y, margin = linear_two_class(dim=dim, epsilon=eps)
  assert (margin < 0).sum() >= 20 and (margin > 0).sum() >= 20
  queries = 300
  x_adv, used = jax.jit(lambda p: attacks.square(
      apply_fn, p, x, y, key=jax.random.key(0), epsilon=eps,
      num_queries=queries, return_queries=True))(params)
  fooled = ~_correct(apply_fn, params, x_adv, y)
  np.testing.assert_array_equal(fooled, margin < 0)
  assert float(attacks.per_example_norm(x_adv - x, "linf").max()) <= eps + ATOL
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  # Fooled examples stop counting queries; the others use the whole budget.
  used = np.asarray(used)
  assert np.all(used[margin > 0] == queries)
  assert np.all(used[margin < 0] < queries)


@pytest.mark.parametrize("name", ["pgd", "apgd_ce", "apgd_t", "fgsm",
                                  "worst_case"])
def test_gradient_attacks_match_the_linear_closed_form(name):
  """Soundness (no example with a positive worst-case margin is fooled: no
  attack may beat the optimum) and, for a linear model whose gradient sign is
  constant, completeness: every fooled-able example is fooled."""
  eps = 0.1
  apply_fn, params, x, y, margin = linear_two_class(epsilon=eps, seed=1)
  x_adv = _run(name, apply_fn, params, jnp.asarray(x), jnp.asarray(y),
               key=jax.random.key(0), epsilon=eps, norm="linf")
  fooled = ~_correct(apply_fn, params, x_adv, y)
  assert not fooled[margin > 0].any()
  np.testing.assert_array_equal(fooled, margin < 0)
  assert float(attacks.per_example_norm(x_adv - x, "linf").max()) <= eps + ATOL
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_square_rejects_l2():
  apply_fn, params = trained_digits_mlp()
  x, y = _test_set(4)
  with pytest.raises(ValueError, match="linf"):
    attacks.square(apply_fn, params, x, y, key=jax.random.key(0),
                   epsilon=0.5, norm="l2")


def test_square_returns_misclassified_inputs_unchanged():
  """An example the model gets wrong already is its own worst case, at no
  query; ε = 0 returns every input."""
  apply_fn, params, x, y, _ = linear_two_class(num_examples=40)
  y = np.where(np.arange(len(y)) % 2 == 0, 1 - y, y)  # Every other one wrong.
  wrong = ~_correct(apply_fn, params, x, y)
  run = jax.jit(lambda eps: attacks.square(
      apply_fn, params, x, y, key=jax.random.key(0), epsilon=eps,
      num_queries=50, return_queries=True))
  for eps in (0.1, 0.0):
    x_adv, used = run(eps)
    np.testing.assert_array_equal(np.asarray(x_adv)[wrong], x[wrong])
    assert np.all(np.asarray(used)[wrong] == 0)
  np.testing.assert_array_equal(np.asarray(x_adv), x)
