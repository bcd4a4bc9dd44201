"""L∞ / L2 attacks in JAX: FGSM, PGD, APGD-CE, APGD-T, Square and restarts.

FGSM, PGD and APGD (Croce & Hein 2020; APGD-CE on the cross-entropy, APGD-T on
the targeted DLR loss) are white-box gradient attacks; Square (Andriushchenko
et al. 2020) is a score-based black-box attack that only queries the logits,
so it is not fooled by masked or obfuscated gradients.

Every attack takes any `apply_fn(params, x) -> logits` (shape `(batch, C)`),
a batch `x` of any rank (flat `(B, D)` or images `(B, H, W, C)`) and integer
labels `y` of shape `(B,)`, and returns adversarial examples of the shape of
`x`. Norms are per example: over every axis but the first.

Threat model: `x_adv` lies in the closed ε-ball around `x` (L∞ or L2) and, when
`domain=(lo, hi)` is given, in the box `[lo, hi]`; `domain=None` means
unbounded inputs (used by the Gaussian toy of `gaussian_toy.py`). The
projection is onto the ball first, then a clip to the domain; for an `x`
inside the domain the clip only moves coordinates of the perturbation towards
zero, so the result stays in the ball for both norms.

Conventions that make the attacks testable:

* Deterministic given `key`; pure and `jax.jit`-compatible (loops are
  `lax.fori_loop`, Square's a `lax.while_loop` that ends once every example
  is fooled). `epsilon`, `step_size` may be Python floats or scalars;
  `num_steps`, `num_targets`, `num_queries`, `norm`, `loss`, `domain` must be
  static (Python values).
* `pgd`, `apgd_ce`, `apgd_t` and `square` return, per example, the *worst
  point they visited*: a misclassified one if any iterate was misclassified,
  otherwise the one with the highest loss (as AutoAttack does). Therefore,
  for `pgd` with the same key and step size, more steps can never raise
  robust accuracy. Madry-style training wants the last iterate instead;
  `adversarial_training` calls `pgd_last_iterate`.
* Losses (maximised by the attacker): "ce" is the cross-entropy of the true
  label; "margin" is the Carlini–Wagner margin `max_{j≠y} z_j − z_y`, positive
  exactly when the example is misclassified; `targeted_dlr_loss` is APGD-T's
  objective. Whatever the loss, "fooled" means `argmax z ≠ y` (untargeted).
* Gradients are taken in inference mode of whatever `apply_fn` the caller
  passes (see `models.make_apply_fn`): the attack never changes model state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

ApplyFn = Callable[[Any, jax.Array], jax.Array]
AttackFn = Callable[..., jax.Array]

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")
_TINY = 1e-12


# --------------------------------------------------------------------------
# Argument checks (run at trace time, on Python values only).
# --------------------------------------------------------------------------

def _concrete(value):
  """`value` as a numpy array, or None when it is traced (checked at run time)."""
  try:
    return np.asarray(value)
  except (jax.errors.ConcretizationTypeError,
          jax.errors.TracerArrayConversionError):
    return None


def check_norm(norm: str) -> str:
  if norm not in NORMS:
    raise ValueError(f"Unknown norm {norm!r}; use one of {NORMS}.")
  return norm


def check_loss(loss: str) -> str:
  if loss not in LOSSES:
    raise ValueError(f"Unknown loss {loss!r}; use one of {LOSSES}.")
  return loss


def _check_nonnegative(name: str, value) -> None:
  v = _concrete(value)
  if v is not None:
    if v.ndim != 0:
      raise ValueError(f"{name} must be a scalar, got shape {v.shape}.")
    if not np.isfinite(v) or v < 0:
      raise ValueError(f"{name}={float(v)} must be a finite number >= 0.")


def check_domain(domain):
  if domain is None:
    return None
  try:
    lo, hi = domain
    lo, hi = float(lo), float(hi)
  except (TypeError, ValueError) as e:
    raise ValueError(
        f"domain={domain!r}; pass (low, high) floats or None for unbounded "
        "inputs.") from e
  if not lo < hi:
    raise ValueError(f"domain={domain!r} needs low < high.")
  return lo, hi


def _check_steps(name: str, value: int, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name}={value!r} must be a Python int.")
  if value < minimum:
    raise ValueError(f"{name}={value} must be >= {minimum}.")
  return int(value)


def _check_inputs(x, y) -> None:
  if x.ndim < 2:
    raise ValueError(f"x must be batched, shape (B, ...); got {x.shape}.")
  if y.shape != x.shape[:1]:
    raise ValueError(
        f"labels must have shape (B,) = {x.shape[:1]}; got {y.shape}.")


# --------------------------------------------------------------------------
# Per-example geometry.
# --------------------------------------------------------------------------

def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshapes a per-example vector `(B,)` to broadcast against `x`."""
  return v.reshape((-1,) + (1,) * (x.ndim - 1))


def per_example_norm(x: jax.Array, norm: str) -> jax.Array:
  """`(B,)` norms over every axis but the first ("linf" or "l2")."""
  flat = x.reshape((x.shape[0], -1))
  if check_norm(norm) == "linf":
    return jnp.max(jnp.abs(flat), axis=1)
  return jnp.sqrt(jnp.sum(flat * flat, axis=1))


def _l2_normalise(g: jax.Array) -> jax.Array:
  return g / _bcast(per_example_norm(g, "l2") + _TINY, g)


def project(x_adv: jax.Array, x: jax.Array, *, epsilon, norm: str,
            domain) -> jax.Array:
  """Projects onto the ε-ball around `x` (per example), then clips to `domain`."""
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -epsilon, epsilon)
  else:
    n = per_example_norm(delta, "l2")
    factor = jnp.minimum(1.0, epsilon / jnp.maximum(n, _TINY))
    delta = delta * _bcast(factor, delta)
  out = x + delta
  if domain is not None:
    out = jnp.clip(out, domain[0], domain[1])
  return out


def random_init(key: jax.Array, x: jax.Array, *, epsilon, norm: str,
                domain) -> jax.Array:
  """A random start in the ε-ball: uniform in the L∞ cube, uniform in the L2 ball.

  The L2 sample is a Gaussian direction with radius `ε·U^{1/D}` (D the
  per-example dimension), i.e. exactly uniform in the ball.
  """
  if norm == "linf":
    delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * epsilon
  else:
    k_dir, k_rad = jax.random.split(key)
    direction = _l2_normalise(jax.random.normal(k_dir, x.shape, x.dtype))
    dim = int(np.prod(x.shape[1:]))
    radius = jax.random.uniform(k_rad, (x.shape[0],), x.dtype) ** (1.0 / dim)
    delta = direction * _bcast(radius * epsilon, x)
  return project(x + delta, x, epsilon=epsilon, norm=norm, domain=domain)


# --------------------------------------------------------------------------
# Losses.
# --------------------------------------------------------------------------

def per_example_loss(logits: jax.Array, y: jax.Array, loss: str) -> jax.Array:
  """The attacker's objective per example, `(B,)`; larger is more adversarial."""
  if loss == "ce":
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)
  if loss == "margin":
    num_classes = logits.shape[-1]
    true = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool), -jnp.inf,
                       logits)
    return jnp.max(others, axis=-1) - true
  raise ValueError(f"Unknown loss {loss!r}; use one of {LOSSES}.")


def targeted_dlr_loss(logits: jax.Array, y: jax.Array,
                      target: jax.Array) -> jax.Array:
  """APGD-T's targeted DLR loss `(B,)`; larger is more adversarial.

  `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)`, with `z_π1 ≥ z_π2 ≥ …`
  the sorted logits and `t` the target class (Croce & Hein 2020, eq. 7). The
  ratio is invariant to shifting and rescaling the logits, so a model cannot
  hide behind large or saturated logits. With fewer than 4 classes `z_π4`
  does not exist; the loss is then the unnormalised `z_t − z_y`.
  """
  true = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  tgt = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
  if logits.shape[-1] < 4:
    return tgt - true
  top = jax.lax.top_k(logits, 4)[0]
  scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY
  return -(true - tgt) / scale


def _as_loss_fn(loss) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`loss` as `fn(logits, y) -> (B,)`: a name from `LOSSES` or a callable."""
  if callable(loss):
    return loss
  check_loss(loss)
  return lambda logits, y: per_example_loss(logits, y, loss)


def _loss_and_grad(apply_fn, params, x, y, loss):
  """Per-example loss `(B,)`, misclassified flags `(B,)` and `d loss_i / d x_i`.

  `loss` is a name from `LOSSES` or a callable `(logits, y) -> (B,)`.
  """
  loss_fn = _as_loss_fn(loss)

  def total(x_):
    logits = apply_fn(params, x_)
    losses = loss_fn(logits, y)
    # The sum decouples the examples: d(sum)/dx_i = d loss_i / dx_i for any
    # model that maps examples independently (inference mode).
    return jnp.sum(losses), (losses, jnp.argmax(logits, axis=-1) != y)
  (_, (losses, wrong)), grad = jax.value_and_grad(total, has_aux=True)(x)
  return losses, wrong, grad


def _better(wrong_new, loss_new, wrong_old, loss_old) -> jax.Array:
  """Is the new point a worse case for the defender? Misclassified first, then loss."""
  return (wrong_new & ~wrong_old) | ((wrong_new == wrong_old) &
                                     (loss_new > loss_old))


def _select(pick: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.where(_bcast(pick, a), a, b)


# --------------------------------------------------------------------------
# FGSM.
# --------------------------------------------------------------------------

def fgsm(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array, *,
         epsilon, norm: str = "linf", loss: str = "ce",
         domain=(0.0, 1.0), key: jax.Array | None = None) -> jax.Array:
  """Fast gradient (sign) method: one step of size ε from `x`.

  L∞: `x + ε·sign(∇)`; L2: `x + ε·∇/‖∇‖`; then clipped to `domain`. `key` is
  accepted (and ignored) so that all attacks share one calling convention.
  """
  del key
  check_norm(norm), check_loss(loss)
  _check_nonnegative("epsilon", epsilon)
  domain = check_domain(domain)
  _check_inputs(x, y)
  _, _, grad = _loss_and_grad(apply_fn, params, x, y, loss)
  step = jnp.sign(grad) if norm == "linf" else _l2_normalise(grad)
  return project(x + epsilon * step, x, epsilon=epsilon, norm=norm,
                 domain=domain)


# --------------------------------------------------------------------------
# PGD.
# --------------------------------------------------------------------------

def _pgd(apply_fn, params, x, y, *, key, epsilon, step_size, num_steps, norm,
         random_start, loss, domain, keep_best):
  check_norm(norm), check_loss(loss)
  _check_nonnegative("epsilon", epsilon)
  _check_nonnegative("step_size", step_size)
  num_steps = _check_steps("num_steps", num_steps, 0)
  domain = check_domain(domain)
  _check_inputs(x, y)
  x = jnp.asarray(x)
  params = jax.lax.stop_gradient(params)

  if random_start:
    x0 = random_init(key, x, epsilon=epsilon, norm=norm, domain=domain)
  else:
    x0 = project(x, x, epsilon=epsilon, norm=norm, domain=domain)

  def ascend(x_cur, grad):
    step = jnp.sign(grad) if norm == "linf" else _l2_normalise(grad)
    return project(x_cur + step_size * step, x, epsilon=epsilon, norm=norm,
                   domain=domain)

  if not keep_best:
    def body(_, x_cur):
      _, _, grad = _loss_and_grad(apply_fn, params, x_cur, y, loss)
      return ascend(x_cur, grad)
    return jax.lax.fori_loop(0, num_steps, body, x0)

  # Keep the worst point visited. The loss at the current iterate comes with
  # its gradient, so only the final iterate needs one extra forward pass.
  batch = x.shape[0]
  init = (x0, x0, jnp.full((batch,), -jnp.inf, x.dtype),
          jnp.zeros((batch,), bool))

  def body_best(_, carry):
    x_cur, x_best, loss_best, wrong_best = carry
    losses, wrong, grad = _loss_and_grad(apply_fn, params, x_cur, y, loss)
    pick = _better(wrong, losses, wrong_best, loss_best)
    x_best = _select(pick, x_cur, x_best)
    loss_best = jnp.where(pick, losses, loss_best)
    wrong_best = jnp.where(pick, wrong, wrong_best)
    return ascend(x_cur, grad), x_best, loss_best, wrong_best

  x_last, x_best, loss_best, wrong_best = jax.lax.fori_loop(
      0, num_steps, body_best, init)
  logits = apply_fn(params, x_last)
  losses = per_example_loss(logits, y, loss)
  wrong = jnp.argmax(logits, axis=-1) != y
  pick = _better(wrong, losses, wrong_best, loss_best)
  return _select(pick, x_last, x_best)


def pgd(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array, *,
        key: jax.Array, epsilon, step_size, num_steps: int,
        norm: str = "linf", random_start: bool = True, loss: str = "ce",
        domain=(0.0, 1.0)) -> jax.Array:
  """Projected gradient ascent on the loss inside the ε-ball (Madry et al. 2018).

  Start: uniform in the ball (`random_start=True`) or at `x`. Step: L∞
  `x + α·sign(∇)`, L2 `x + α·∇/‖∇‖`; then project onto the ball and clip to
  `domain`. Returns, per example, the worst of the `num_steps + 1` points
  visited (misclassified if any, else highest loss), so that more steps with
  the same key and `step_size` never help the defender.

  Args:
    apply_fn: `apply_fn(params, x) -> logits (B, C)`; must treat examples
      independently (inference mode).
    x: `(B, ...)` inputs, inside `domain`. y: `(B,)` integer labels.
    key: PRNG key for the random start (unused when `random_start=False`).
    epsilon: radius of the ball (>= 0). step_size: α (>= 0).
    num_steps: number of gradient steps (>= 0; 0 returns the start point).
    norm: "linf" or "l2". loss: "ce" or "margin" (CW).
    domain: `(low, high)` box for the inputs, or None for unbounded inputs.
  """
  return _pgd(apply_fn, params, x, y, key=key, epsilon=epsilon,
              step_size=step_size, num_steps=num_steps, norm=norm,
              random_start=random_start, loss=loss, domain=domain,
              keep_best=True)


def pgd_last_iterate(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array, *,
                     key: jax.Array, epsilon, step_size, num_steps: int,
                     norm: str = "linf", random_start: bool = True,
                     loss: str = "ce", domain=(0.0, 1.0)) -> jax.Array:
  """`pgd` that returns the last iterate (Madry et al.'s training attack).

  Cheaper than `pgd` by one forward pass and no bookkeeping; use it to train,
  `pgd` to evaluate.
  """
  return _pgd(apply_fn, params, x, y, key=key, epsilon=epsilon,
              step_size=step_size, num_steps=num_steps, norm=norm,
              random_start=random_start, loss=loss, domain=domain,
              keep_best=False)


# --------------------------------------------------------------------------
# APGD-CE and APGD-T (Croce & Hein 2020, "Reliable evaluation of adversarial
# robustness with an ensemble of diverse parameter-free attacks", Algorithm 1;
# AutoAttack's targeted version on the DLR loss).
# --------------------------------------------------------------------------

def apgd_checkpoints(num_steps: int) -> list[int]:
  """The iterations at which APGD checks its step size (for documentation/tests).

  `p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)`, as
  integers: the first check after `⌊0.22 N⌋` steps, then intervals shrinking by
  `⌊0.03 N⌋` down to `⌊0.06 N⌋` (each at least 1).
  """
  first, decrement, minimum = _apgd_schedule(num_steps)
  points, k, t = [], first, 0
  while t + k <= num_steps:
    t += k
    points.append(t)
    k = max(k - decrement, minimum)
  return points


def _apgd_schedule(num_steps: int) -> tuple[int, int, int]:
  return (max(int(0.22 * num_steps), 1), max(int(0.03 * num_steps), 1),
          max(int(0.06 * num_steps), 1))


def _check_apgd_args(*, norm, epsilon, num_steps, domain, x, y, rho,
                     momentum):
  check_norm(norm)
  _check_nonnegative("epsilon", epsilon)
  num_steps = _check_steps("num_steps", num_steps, 1)
  domain = check_domain(domain)
  _check_inputs(x, y)
  if not 0.0 <= rho <= 1.0:
    raise ValueError(f"rho={rho} must be in [0, 1].")
  if not 0.0 <= momentum <= 1.0:
    raise ValueError(f"momentum={momentum} must be in [0, 1].")
  return num_steps, domain


def _apgd(apply_fn, params, x, y, *, key, loss_fn, epsilon, num_steps, norm,
          domain, rho, momentum, initial_step, random_start):
  """The APGD iteration of `apgd_ce` on any loss `loss_fn(logits, y) -> (B,)`.

  Arguments are already checked. Returns per example the first misclassified
  iterate if there is one, otherwise the highest-loss iterate.
  """
  x = jnp.asarray(x)
  params = jax.lax.stop_gradient(params)
  batch = x.shape[0]
  first_k, size_decr, min_k = _apgd_schedule(num_steps)

  if random_start:
    x0 = random_init(key, x, epsilon=epsilon, norm=norm, domain=domain)
  else:
    x0 = project(x, x, epsilon=epsilon, norm=norm, domain=domain)

  def proj(z):
    return project(z, x, epsilon=epsilon, norm=norm, domain=domain)

  def direction(g):
    return jnp.sign(g) if norm == "linf" else _l2_normalise(g)

  loss0, wrong0, grad0 = _loss_and_grad(apply_fn, params, x0, y, loss_fn)
  # losses[t] is the loss after t steps (losses[0] at the start point).
  losses_hist = jnp.zeros((num_steps + 1, batch), x.dtype).at[0].set(loss0)
  state = dict(
      x_cur=x0, x_prev=x0, grad=grad0,
      x_best=x0, grad_best=grad0, loss_best=loss0,
      x_fooled=x0, fooled=wrong0,
      step=jnp.full((batch,), initial_step, x.dtype) * epsilon,
      hist=losses_hist,
      since_check=jnp.zeros((), jnp.int32), k=jnp.asarray(first_k, jnp.int32),
      loss_best_last_check=loss0,
      reduced_last_check=jnp.ones((batch,), bool),
  )

  def body(i, s):
    a = jnp.where(i == 0, 1.0, momentum).astype(x.dtype)
    x_cur = s["x_cur"]
    z = proj(x_cur + _bcast(s["step"], x) * direction(s["grad"]))
    x_new = proj(x_cur + a * (z - x_cur) + (1.0 - a) * (x_cur - s["x_prev"]))

    loss_new, wrong_new, grad_new = _loss_and_grad(apply_fn, params, x_new, y,
                                                   loss_fn)
    newly_fooled = wrong_new & ~s["fooled"]
    x_fooled = _select(newly_fooled, x_new, s["x_fooled"])
    fooled = s["fooled"] | wrong_new
    improved = loss_new > s["loss_best"]
    x_best = _select(improved, x_new, s["x_best"])
    grad_best = _select(improved, grad_new, s["grad_best"])
    loss_best = jnp.where(improved, loss_new, s["loss_best"])
    hist = s["hist"].at[i + 1].set(loss_new)

    # Checkpoint bookkeeping.
    since_check = s["since_check"] + 1
    k = s["k"]
    at_check = since_check == k
    # Count the steps t in (i - k, i] whose loss rose: hist[t+1] > hist[t].
    t = jnp.arange(num_steps)
    window = (t > i - k) & (t <= i)
    rises = jnp.sum((hist[1:] > hist[:-1]) & window[:, None], axis=0)
    osc = rises <= k.astype(x.dtype) * rho
    stalled = (~s["reduced_last_check"]) & (s["loss_best_last_check"] >= loss_best)
    halve = at_check & (osc | stalled)

    step = jnp.where(halve, s["step"] / 2.0, s["step"])
    x_next = _select(halve, x_best, x_new)
    grad_next = _select(halve, grad_best, grad_new)
    reduced_last_check = jnp.where(at_check, osc | stalled,
                                   s["reduced_last_check"])
    loss_best_last_check = jnp.where(at_check, loss_best,
                                     s["loss_best_last_check"])
    k_next = jnp.where(at_check, jnp.maximum(k - size_decr, min_k), k)
    since_check = jnp.where(at_check, 0, since_check)
    return dict(
        x_cur=x_next, x_prev=x_cur, grad=grad_next,
        x_best=x_best, grad_best=grad_best, loss_best=loss_best,
        x_fooled=x_fooled, fooled=fooled, step=step, hist=hist,
        since_check=since_check, k=k_next,
        loss_best_last_check=loss_best_last_check,
        reduced_last_check=reduced_last_check)

  s = jax.lax.fori_loop(0, num_steps, body, state)
  return _select(s["fooled"], s["x_fooled"], s["x_best"])


def apgd_ce(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array, *,
            key: jax.Array, epsilon, num_steps: int = 100, norm: str = "linf",
            domain=(0.0, 1.0), rho: float = 0.75, momentum: float = 0.75,
            initial_step: float = 2.0, random_start: bool = True,
            loss: str = "ce") -> jax.Array:
  """Auto-PGD on the cross-entropy: PGD with momentum and no step size to tune.

  The step size starts at `initial_step · ε` (2ε) and is halved, per example,
  at each checkpoint `w_j` (see `apgd_checkpoints`) where either
    1. the loss increased in at most a fraction `rho` of the steps since the
       previous checkpoint, or
    2. neither the step size nor the best loss changed since the previous
       checkpoint (not checked at the first one);
  after a halving the iterate restarts from the best point found so far. The
  update is `z = P(x_k + η ∇̃)`, `x_{k+1} = P(x_k + a(z − x_k) + (1−a)(x_k −
  x_{k−1}))` with `a = 1` on the first step and `momentum` (0.75) after, where
  `∇̃` is `sign(∇)` (L∞) or `∇/‖∇‖` (L2) and `P` the projection of `pgd`.

  The start is uniform in the ball (`random_start=True`) or `x`. Returns per
  example a misclassified point if one was found, otherwise the highest-loss
  point. `loss="margin"` gives the same algorithm on the CW margin.
  """
  check_loss(loss)
  num_steps, domain = _check_apgd_args(
      norm=norm, epsilon=epsilon, num_steps=num_steps, domain=domain, x=x,
      y=y, rho=rho, momentum=momentum)
  return _apgd(apply_fn, params, x, y, key=key, loss_fn=_as_loss_fn(loss),
               epsilon=epsilon, num_steps=num_steps, norm=norm, domain=domain,
               rho=rho, momentum=momentum, initial_step=initial_step,
               random_start=random_start)


def target_classes(logits: jax.Array, y: jax.Array,
                   num_targets: int) -> jax.Array:
  """`(B, num_targets)`: the classes other than `y`, highest logit first."""
  others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf,
                     logits)
  return jax.lax.top_k(others, num_targets)[1]


def apgd_t(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array, *,
           key: jax.Array, epsilon, num_steps: int = 100,
           num_targets: int = 9, norm: str = "linf", domain=(0.0, 1.0),
           rho: float = 0.75, momentum: float = 0.75,
           initial_step: float = 2.0, random_start: bool = True) -> jax.Array:
  """Targeted APGD on the DLR loss (APGD-T of AutoAttack, Croce & Hein 2020).

  For each of the `num_targets` classes with the highest clean logits other
  than the label (capped at C − 1), runs the APGD iteration of `apgd_ce`
  (same step-size schedule, checkpoints and momentum; `num_steps` steps each)
  on `targeted_dlr_loss` towards that class, from its own random start
  (`fold_in(key, k)` for the k-th target). Keeps per example the worst
  result over targets: a misclassified one (any class but `y` counts) if
  there is one, otherwise the one with the largest CW margin
  `max_{j≠y} z_j − z_y`. Cost: `num_targets · num_steps` gradient steps.
  """
  num_steps, domain = _check_apgd_args(
      norm=norm, epsilon=epsilon, num_steps=num_steps, domain=domain, x=x,
      y=y, rho=rho, momentum=momentum)
  num_targets = _check_steps("num_targets", num_targets, 1)
  x = jnp.asarray(x)
  params = jax.lax.stop_gradient(params)
  clean_logits = apply_fn(params, x)
  num_classes = clean_logits.shape[-1]
  if num_classes < 2:
    raise ValueError("apgd_t needs at least 2 classes.")
  num_targets = min(num_targets, num_classes - 1)
  targets = target_classes(clean_logits, y, num_targets)

  def run(k):
    target = targets[:, k]
    x_adv = _apgd(
        apply_fn, params, x, y, key=jax.random.fold_in(key, k),
        loss_fn=lambda logits, y_: targeted_dlr_loss(logits, y_, target),
        epsilon=epsilon, num_steps=num_steps, norm=norm, domain=domain,
        rho=rho, momentum=momentum, initial_step=initial_step,
        random_start=random_start)
    logits = apply_fn(params, x_adv)
    return (x_adv, per_example_loss(logits, y, "margin"),
            jnp.argmax(logits, axis=-1) != y)

  def body(k, carry):
    x_best, margin_best, wrong_best = carry
    x_adv, margin, wrong = run(k)
    pick = _better(wrong, margin, wrong_best, margin_best)
    return (_select(pick, x_adv, x_best),
            jnp.where(pick, margin, margin_best),
            jnp.where(pick, wrong, wrong_best))

  # The first target is run outside the loop to build the carry.
  return jax.lax.fori_loop(1, num_targets, body, run(0))[0]


# --------------------------------------------------------------------------
# Square attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient
# black-box adversarial attack via random search", Algorithm 1 and §3.1).
# --------------------------------------------------------------------------

# The fraction p of pixels changed per query: p_init divided by 2, 4, ..., 512
# after these iterations of a 10,000-query run (the paper's schedule; runs of
# other lengths rescale it, as AutoAttack does).
_SQUARE_P_BOUNDARIES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_p_schedule(iteration, num_queries: int, p_init: float = 0.8):
  """The fraction of pixels Square changes at `iteration` (0-based), rescaled
  from the paper's 10,000-query schedule to a run of `num_queries`:
  `p_init` up to iteration 10, `p_init / 2` up to 50, then halved at 200,
  500, 1000, 2000, 4000, 6000 and 8000 (in units of the 10,000-query run).
  Works on Python ints and traced scalars."""
  rescaled = jnp.floor(jnp.asarray(iteration, jnp.float32) / num_queries *
                       10000.0)
  halvings = jnp.sum(rescaled > jnp.asarray(_SQUARE_P_BOUNDARIES, jnp.float32))
  return p_init / (2.0 ** halvings.astype(jnp.float32))


def _as_image(x: jax.Array) -> jax.Array:
  """`x` as `(B, H, W, C)` for Square's windows.

  Ranks 4 (NHWC) and 3 (NHW) keep their layout. Flat inputs `(B, D)` become
  `√D × √D` one-channel images when D is a perfect square (a flattened
  MNIST/digits image), otherwise a `1 × D` strip; other ranks are flattened
  first.
  """
  if x.ndim == 4:
    return x
  if x.ndim == 3:
    return x[..., None]
  flat = x.reshape((x.shape[0], -1))
  dim = flat.shape[1]
  side = int(round(dim ** 0.5))
  if side * side == dim:
    return flat.reshape((x.shape[0], side, side, 1))
  return flat.reshape((x.shape[0], 1, dim, 1))


def _square_window(key, p, shape):
  """A random window `(B, H, W, 1)` bool mask covering a fraction ~p of pixels.

  Images: a square of side `round(√(p·H·W))` clipped to [1, min(H, W)] (the
  paper's); `1 × D` strips: a segment of `round(p·D)` pixels.
  """
  batch, height, width, _ = shape
  if height > 1:
    side = jnp.clip(jnp.round(jnp.sqrt(p * height * width)), 1,
                    min(height, width)).astype(jnp.int32)
    size_h = size_w = side
  else:
    size_h = jnp.asarray(1, jnp.int32)
    size_w = jnp.clip(jnp.round(p * width), 1, width).astype(jnp.int32)
  k_h, k_w = jax.random.split(key)
  # Top-left corners uniform over the positions where the window fits.
  top = jnp.floor(jax.random.uniform(k_h, (batch,)) *
                  (height - size_h + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(k_w, (batch,)) *
                   (width - size_w + 1)).astype(jnp.int32)
  top = jnp.minimum(top, height - size_h)[:, None, None, None]
  left = jnp.minimum(left, width - size_w)[:, None, None, None]
  rows = jnp.arange(height)[None, :, None, None]
  cols = jnp.arange(width)[None, None, :, None]
  return ((rows >= top) & (rows < top + size_h) & (cols >= left) &
          (cols < left + size_w))


def _random_signs(key, shape, dtype):
  return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0).astype(
      dtype)


def _square(apply_fn, params, x, y, *, key, epsilon, num_queries, p_init,
            domain):
  """Square L∞; returns `(x_adv, queries (B,) int32)`. Arguments checked."""
  x = jnp.asarray(x)
  params = jax.lax.stop_gradient(params)
  img = _as_image(x)
  batch, _, width, channels = img.shape

  def query(x_img):
    logits = apply_fn(params, x_img.reshape(x.shape))
    return (per_example_loss(logits, y, "margin"),
            jnp.argmax(logits, axis=-1) != y)

  def clip(x_img):
    return project(x_img, img, epsilon=epsilon, norm="linf", domain=domain)

  # The clean point is not a query of the attack (AutoAttack checks it
  # before attacking): an example misclassified already is returned as is.
  loss_clean, wrong_clean = query(img)
  # Start: vertical stripes, δ = ±ε constant along each column and channel.
  k_init, k_loop = jax.random.split(key)
  stripes = _random_signs(k_init, (batch, 1, width, channels), x.dtype)
  x_init = clip(img + epsilon * stripes)
  loss_init, wrong_init = query(x_init)
  x_best = _select(wrong_clean, img, x_init)
  loss_best = jnp.where(wrong_clean, loss_clean, loss_init)
  fooled = wrong_clean | wrong_init
  queries = jnp.where(wrong_clean, 0, 1).astype(jnp.int32)

  def cond(carry):
    i, _, _, fooled, _ = carry
    return (i < num_queries - 1) & jnp.any(~fooled)

  def body(carry):
    i, x_best, loss_best, fooled, queries = carry
    k_win, k_sign = jax.random.split(jax.random.fold_in(k_loop, i))
    window = _square_window(k_win, square_p_schedule(i, num_queries, p_init),
                            img.shape)
    # One sign per channel over the whole window, as in the paper.
    signs = _random_signs(k_sign, (batch, 1, 1, channels), x.dtype)
    delta_best = x_best - img

    def candidate(s):
      return clip(img + jnp.where(window, epsilon * s, delta_best))

    x_new = candidate(signs)
    # The paper resamples until the window actually changes; flipping the
    # signs changes every pixel of it unless the domain clip forbids it.
    same = jnp.all(jnp.where(window, jnp.abs(x_new - x_best) < 1e-7, True),
                   axis=(1, 2, 3))
    x_new = _select(same, candidate(-signs), x_new)
    loss_new, wrong_new = query(x_new)
    active = ~fooled  # Examples already fooled are neither updated nor counted.
    take = active & (loss_new > loss_best)
    return (i + 1, _select(take, x_new, x_best),
            jnp.where(take, loss_new, loss_best), fooled | (take & wrong_new),
            queries + active.astype(jnp.int32))

  init = (jnp.zeros((), jnp.int32), x_best, loss_best, fooled, queries)
  _, x_best, _, _, queries = jax.lax.while_loop(cond, body, init)
  return x_best.reshape(x.shape), queries


def square(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array, *,
           key: jax.Array, epsilon, num_queries: int = 5000,
           norm: str = "linf", p_init: float = 0.8, domain=(0.0, 1.0),
           return_queries: bool = False):
  """Square attack: score-based black-box random search (L∞, margin loss).

  Only the logits are used (never a gradient). Start: vertical stripes, each
  column and channel of the image shifted by ±ε (random sign), clipped to
  `domain`. Each further query changes one random square window (a fraction
  `p` of the pixels, `p` from `square_p_schedule`: `p_init` = 0.8 halved on
  the paper's schedule) to ±ε from `x`, one random sign per channel, and keeps
  the change for the examples whose CW margin `max_{j≠y} z_j − z_y` rose.
  Examples stop being updated (and their queries counted) once misclassified.
  A run is `num_queries` model evaluations per example (the start included;
  the clean input is checked for free), fewer for examples fooled earlier;
  the loop ends when every example of the batch is fooled. Inputs of rank 2
  are read as images when possible (see `_as_image`).

  Returns `x_adv` (shape of `x`), in the ε-ball and `domain`: the first
  misclassified point found, else the highest-margin one; with
  `return_queries=True`, `(x_adv, queries)` with `queries` `(B,)` int32 model
  evaluations spent per example.

  Only L∞ is implemented (the L2 attack of the paper uses different window
  updates); `norm="l2"` raises ValueError.
  """
  check_norm(norm)
  if norm != "linf":
    raise ValueError(
        "square: only norm='linf' is implemented; use apgd_ce / apgd_t for "
        "L2 or drop 'square' from the attack suite.")
  _check_nonnegative("epsilon", epsilon)
  num_queries = _check_steps("num_queries", num_queries, 1)
  domain = check_domain(domain)
  _check_inputs(x, y)
  if not 0.0 < p_init <= 1.0:
    raise ValueError(f"p_init={p_init} must be in (0, 1].")
  x_adv, queries = _square(apply_fn, params, x, y, key=key, epsilon=epsilon,
                           num_queries=num_queries, p_init=p_init,
                           domain=domain)
  return (x_adv, queries) if return_queries else x_adv


# --------------------------------------------------------------------------
# Restarts.
# --------------------------------------------------------------------------

def worst_case(attack_fn: AttackFn, apply_fn: ApplyFn, params, x: jax.Array,
               y: jax.Array, *, key: jax.Array, num_restarts: int,
               **attack_kwargs) -> jax.Array:
  """Runs `attack_fn` `num_restarts` times and keeps, per example, the worst case.

  Restart `r` uses `jax.random.fold_in(key, r)`, so the first `r` restarts of
  a run with more restarts are exactly those of a run with fewer: robust
  accuracy can only fall as `num_restarts` grows. "Worst" means misclassified
  if any restart misclassifies, otherwise the highest loss (`loss` from
  `attack_kwargs`, default "ce"). The attack is traced once (`lax.fori_loop`).
  """
  num_restarts = _check_steps("num_restarts", num_restarts, 1)
  _check_inputs(x, y)
  loss = check_loss(attack_kwargs.get("loss", "ce"))
  params = jax.lax.stop_gradient(params)

  def run(r):
    x_adv = attack_fn(apply_fn, params, x, y, key=jax.random.fold_in(key, r),
                      **attack_kwargs)
    logits = apply_fn(params, x_adv)
    return (x_adv, per_example_loss(logits, y, loss),
            jnp.argmax(logits, axis=-1) != y)

  def body(r, carry):
    x_best, loss_best, wrong_best = carry
    x_adv, losses, wrong = run(r)
    pick = _better(wrong, losses, wrong_best, loss_best)
    return (_select(pick, x_adv, x_best), jnp.where(pick, losses, loss_best),
            jnp.where(pick, wrong, wrong_best))

  first = run(0)
  if num_restarts == 1:
    return first[0]
  return jax.lax.fori_loop(1, num_restarts, body, first)[0]
