"""Tiny trained models shared by the attack/training/evaluation tests.

`digits_data()` is scikit-learn's 8x8 digits (1,797 images, in [0, 1]) split
1,500 / 297. `trained_digits_mlp()` is a 64-64-10 MLP trained naturally for
150 full-batch Adam steps through `adversarial_training` (ε = 0), about 97%
test accuracy; cached per process so a test file trains it once.
"""
import functools

import jax
import numpy as np
from sklearn.datasets import load_digits

from scalable_awt import adversarial_training as at
from scalable_awt import models


@functools.lru_cache(maxsize=None)
def digits_data():
  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  perm = np.random.RandomState(0).permutation(len(x))
  x, y = x[perm], y[perm]
  return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def train_digits_mlp(*, epsilon=0.0, steps=150, pgd_steps=5, norm="linf",
                     seed=0):
  (x, y), _ = digits_data()
  model = models.MLP(features=(64,), num_classes=10)
  params, state = models.init_model(model, jax.random.key(seed), (1, 64))
  tx = at.make_optimizer(name="adam", learning_rate=1e-2, total_steps=steps)
  ts = at.create_train_state(params, state, tx)
  step = jax.jit(at.make_train_step(
      model, tx, epsilon=epsilon, step_size=2.5 * epsilon / pgd_steps,
      num_steps=pgd_steps, norm=norm))
  batch = {"image": x, "label": y}
  for i in range(steps):
    ts, _ = step(ts, batch, jax.random.fold_in(jax.random.key(seed + 1), i))
  return model, ts


@functools.lru_cache(maxsize=None)
def trained_digits_mlp():
  """`(apply_fn, params)` of the naturally trained digits MLP."""
  model, ts = train_digits_mlp()
  return models.make_apply_fn(model, ts.model_state), ts.params


def linear_two_class(*, dim=16, num_examples=200, epsilon=0.1, seed=0,
                     domain=(0.0, 1.0)):
  """A 2-class linear model with its exact L∞ worst case, an attack oracle.

  Logits `[0, w·x + b]` (class 1 iff `w·x + b > 0`), inputs uniform in
  `domain` and labelled by the model, so every example starts correct. The
  true-class margin `s·(w·x + b)`, `s = ±1` for class 1/0, is linear; over the
  L∞ ball ∩ `domain` its minimum is at `x* = clip(x − ε·s·sign(w), domain)`,
  coordinate by coordinate. Returns `(apply_fn, params, x, y, margin)` with
  `margin` the worst-case margin `s·(w·x* + b)`, in float64: an example can
  be fooled iff it is negative. Examples with `|margin| < 1e-3` are dropped so
  that float32 rounding cannot decide a case.
  """
  rs = np.random.RandomState(seed)
  w = rs.randn(dim)
  lo, hi = domain
  x = rs.uniform(lo, hi, size=(num_examples, dim))
  b = -float(np.median(x @ w))  # About half of each class.
  score = x @ w + b
  sign = np.where(score > 0, 1.0, -1.0)
  x_star = np.clip(x - epsilon * sign[:, None] * np.sign(w)[None, :], lo, hi)
  margin = sign * (x_star @ w + b)
  keep = (np.abs(margin) >= 1e-3) & (np.abs(score) >= 1e-3)
  x, sign, margin = x[keep], sign[keep], margin[keep]
  params = {"w": jax.numpy.asarray(w, np.float32),
            "b": jax.numpy.asarray(b, np.float32)}

  def apply_fn(p, inputs):
    z = inputs.reshape((inputs.shape[0], -1)) @ p["w"] + p["b"]
    return jax.numpy.stack([jax.numpy.zeros_like(z), z], axis=-1)

  return (apply_fn, params, x.astype(np.float32),
          (sign > 0).astype(np.int32), margin)
