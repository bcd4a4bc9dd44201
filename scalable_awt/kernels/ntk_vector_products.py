"""Exact MTK from kernel-vector products, never storing a Jacobian.

Column (j, d) of Θ(X, X̃) is J(X) (J(x̃_j)ᵀ e_d): a VJP of the single example
x̃_j with the unit cotangent e_d gives a parameter-space vector, and a JVP of
the clean batch along it gives the column. This is neural-tangents'
implementation 2 ("NTK-vector products"). Peak memory is m · C parameter-sized
vectors (vmapped); `chunk_size` in `exact_mtk` bounds m.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scalable_awt.kernels import _common


def _columns(apply_fn, params, x, x_adv):
  """Returns K with K[j, d, i, c] = Θ(x_i, x̃_j)[c, d]."""
  example_fn = _common.single_example_fn(apply_fn)
  num_outputs = jax.eval_shape(apply_fn, params, x_adv[:1]).shape[-1]
  unit_cotangents = jnp.eye(num_outputs, dtype=x_adv.dtype)

  def columns_for_example(example):
    _, vjp_fn = jax.vjp(lambda p: example_fn(p, example), params)

    def column(cotangent):
      (direction,) = vjp_fn(cotangent)
      return jax.jvp(lambda p: apply_fn(p, x), (params,), (direction,))[1]

    return jax.vmap(column)(unit_cotangents)  # (C_d, n, C_c)

  return jax.vmap(columns_for_example)(x_adv)  # (m, C_d, n, C_c)


def mtk(apply_fn, params, x, x_adv, *, trace_outputs: bool):
  columns = _columns(apply_fn, params, x, x_adv)
  if trace_outputs:
    return jnp.einsum("jcic->ij", columns)
  return jnp.transpose(columns, (2, 0, 3, 1))  # (n, m, C_c, C_d)


def mtk_diagonal(apply_fn, params, x, x_adv, *, trace_outputs: bool = False):
  example_fn = _common.single_example_fn(apply_fn)

  def block(clean, adversarial):
    _, vjp_fn = jax.vjp(lambda p: example_fn(p, adversarial), params)
    num_outputs = jax.eval_shape(example_fn, params, adversarial).shape[-1]

    def column(cotangent):
      (direction,) = vjp_fn(cotangent)
      return jax.jvp(lambda p: example_fn(p, clean), (params,), (direction,))[1]

    cols = jax.vmap(column)(jnp.eye(num_outputs, dtype=adversarial.dtype))  # (d, c)
    return jnp.trace(cols) if trace_outputs else cols.T

  return jax.vmap(block)(x, x_adv)
