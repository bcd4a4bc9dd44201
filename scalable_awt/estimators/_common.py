"""Pieces shared by the kernel-distance estimators.

Conventions (every estimator follows them):

* The teacher is the dense network `θ ↦ f(θ, ·)` at `θ_0`; the student is the
  masked network `θ_s ↦ f(m ⊙ θ_s, ·)`. Its kernel is taken with respect to
  `θ_s`, i.e. `Θ_s = J_f(m⊙θ_s) diag(m) J_f(m⊙θ_s)ᵀ`: pruned weights do not
  move in training, so they do not enter the sparse network's dynamics. This
  is what the exact kernel of `masked_apply_fn(apply_fn, mask)` gives, and
  what a JVP of that function along any direction computes by itself.
* Kernels are `(n, m, C, C)` with `x` (n clean rows) on the first axis and the
  adversarial inputs (m rows) on the second. Output-space vectors `v` that
  multiply the kernel live on the adversarial side, shape `(m, C)`.
* Every sum over the batch is written on global arrays, so that under `jit`
  with the batch sharded over a mesh XLA turns it into a collective.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from scalable_awt.masks import apply_mask

PyTree = Any
PRECISION = jax.lax.Precision.HIGHEST
DISTRIBUTIONS = ("gaussian", "rademacher")
# Precision of the kernel term's network passes (see `in_precision`).
PRECISIONS = ("float32", "bfloat16")


def masked_apply_fn(apply_fn, mask):
  """`(θ_s, x) -> f(mask ⊙ θ_s, x)`: the student as a function of its own params."""
  def fn(params, x):
    return apply_fn(apply_mask(params, mask), x)
  return fn


# Cached so that one `apply_fn` gets one wrapper: `exact_mtk` takes its
# function as a static argument of `jit`, and a new wrapper per call would
# recompile it every time.
@functools.lru_cache(maxsize=64)
def in_precision(apply_fn, precision: str = "float32"):
  """`apply_fn` with its network pass in `precision`, outputs in float32.

  "float32": `apply_fn` itself. "bfloat16": floating parameters and inputs
  are cast to bfloat16 inside the function, so every forward, JVP and VJP
  through it runs on bfloat16 activations, while its arguments, tangents,
  cotangents and outputs stay float32 (the casts' derivatives convert them),
  and whatever is summed from them (products, distances) is summed in float32.
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision={precision!r}; choose one of {PRECISIONS}.")
  if precision == "float32":
    return apply_fn
  dtype = jnp.dtype(precision)

  def cast(a):
    return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

  def fn(params, x):
    outputs = apply_fn(jax.tree.map(cast, params), cast(x))
    return outputs.astype(jnp.float32)
  return fn


def check_distribution(distribution: str) -> str:
  if distribution not in DISTRIBUTIONS:
    raise ValueError(
        f"Unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}.")
  return distribution


def check_num_samples(num_samples, default, minimum: int = 1) -> int:
  k = default if num_samples is None else num_samples
  if int(k) != k or int(k) < minimum:
    raise ValueError(f"num_samples={num_samples} must be an integer >= {minimum}.")
  return int(k)


def draw(key, shape, dtype, distribution: str):
  """E[z zᵀ] = I: standard normal, or ±1 with equal probability."""
  if distribution == "gaussian":
    return jax.random.normal(key, shape, dtype)
  return jax.random.rademacher(key, shape, dtype)


def random_direction(key, params: PyTree, distribution: str) -> PyTree:
  """One parameter-space direction, drawn leaf by leaf (a pytree like params)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      treedef, [draw(k, leaf.shape, leaf.dtype, distribution)
                for k, leaf in zip(keys, leaves)])


def check_chunk_size(chunk_size) -> int:
  if int(chunk_size) != chunk_size or int(chunk_size) < 0:
    raise ValueError(f"chunk_size={chunk_size} must be an integer >= 0 "
                     "(0 = all probes or directions in one pass).")
  return int(chunk_size)


def map_over_samples(fn, xs, chunk_size: int = 0):
  """`fn` over the leading axis of `xs` (probes, directions).

  `chunk_size=0` (or >= the number of samples): one `vmap`, fastest, but
  every sample's activations and residuals are alive at once (for VGG-16 at
  batch 32 and k = 8, over 4 GB). `chunk_size=c`: `lax.map` over chunks of
  c samples, each chunk rematerialised in the backward pass (`checkpoint`),
  so memory holds one chunk's residuals; the price is one more forward pass
  of the chunk's products. Values and gradients are the same either way.
  """
  num = xs.shape[0]
  if not chunk_size or chunk_size >= num:
    return jax.vmap(fn)(xs)
  return jax.lax.map(jax.checkpoint(fn), xs, batch_size=chunk_size)


def sketch(fn, params, x, key, num_directions: int, distribution: str, chunk_size: int = 0):
  """`S = J(x) R`: (k, n, C), one JVP per direction r_j = random_direction(fold_in(key, j)).

  The k directions exist only as k parameter-shaped pytrees inside the vmap,
  never as a P × k matrix. For a masked `fn` the JVP masks them by itself.
  `chunk_size`: see `map_over_samples`.
  """
  def column(j):
    direction = random_direction(jax.random.fold_in(key, j), params, distribution)
    return jax.jvp(lambda p: fn(p, x), (params,), (direction,))[1]
  return map_over_samples(column, jnp.arange(num_directions), chunk_size)


def kernel_vector_products(fn, params, x, x_adv, vectors, chunk_size: int = 0):
  """`Θ(x, x_adv) v = J(x) (J(x_adv)ᵀ v)` for a stack of v: (k, m, C) -> (k, n, C).

  One VJP (on x_adv) and one JVP (on x) per vector; the primal passes are
  shared across the stack. Swap x and x_adv for `Θᵀ u`. `chunk_size`: see
  `map_over_samples`.
  """
  _, vjp_fn = jax.vjp(lambda p: fn(p, x_adv), params)

  def one(v):
    (direction,) = vjp_fn(v.astype(x_adv.dtype))
    return jax.jvp(lambda p: fn(p, x), (params,), (direction,))[1]

  return map_over_samples(one, vectors, chunk_size)


def flat_rows(a):
  """(k, n, C, ...) -> (k, n·C·...)."""
  return a.reshape(a.shape[0], -1)


def gram(a, b):
  """Row Gram matrix of two stacks of flattened vectors: (k, l)."""
  return jnp.einsum("kp,lp->kl", flat_rows(a), flat_rows(b), precision=PRECISION)


def sum_squares(a):
  return jnp.sum(jnp.square(a))
