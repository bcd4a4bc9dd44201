"""Pieces shared by the exact-kernel implementations."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

# Kernel entries are sums over millions of products: ask for full float32 (or
# float64) accumulation even on accelerators whose default matmul is TF32/bf16.
PRECISION = jax.lax.Precision.HIGHEST


def single_example_fn(apply_fn):
  """`(params, x_i) -> f(params, x_i[None])[0]`, for vmapping over examples.

  Valid because the MTK is only defined for networks that map each example
  on its own (see `scalable_awt.models` on batch norm).
  """
  def fn(params, example):
    return apply_fn(params, example[None])[0]
  return fn


def contract_per_example_grads(grads1: PyTree, grads2: PyTree, *,
                               trace_outputs: bool, diagonal: bool = False) -> jax.Array:
  """Θ from per-example, per-output gradients.

  `grads1` leaves have shape (n, C, *leaf), `grads2` leaves (m, C, *leaf).
  Returns Σ_leaves ⟨g1[i, c], g2[j, d]⟩ as (n, m, C, C), or (n, m) traced over
  outputs; with `diagonal=True` (needs n == m) only the pairs i == j, as
  (n, C, C) or (n,).
  """
  if diagonal:
    spec = "icp,icp->i" if trace_outputs else "icp,idp->icd"
  else:
    spec = "icp,jcp->ij" if trace_outputs else "icp,jdp->ijcd"

  def one_leaf(g1, g2):
    g1 = g1.reshape(g1.shape[0], g1.shape[1], -1)
    g2 = g2.reshape(g2.shape[0], g2.shape[1], -1)
    return jnp.einsum(spec, g1, g2, precision=PRECISION)

  terms = jax.tree.leaves(jax.tree.map(one_leaf, grads1, grads2))
  return sum(terms[1:], terms[0])


def per_example_jacobian(apply_fn, params: PyTree, x: jax.Array) -> PyTree:
  """∂f(x_i)_c / ∂θ for every example: leaves of shape (n, C, *leaf)."""
  return jax.vmap(jax.jacrev(single_example_fn(apply_fn)), in_axes=(None, 0))(params, x)
