"""Exact MTK by Jacobian contraction: Θ = J(X) J(X̃)ᵀ with both Jacobians stored.

The simplest exact implementation and the test oracle. Memory is
(n + m) · C · P numbers, so it only fits small models and batches.
"""

from __future__ import annotations

from scalable_awt.kernels import _common


def mtk(apply_fn, params, x, x_adv, *, trace_outputs: bool):
  jac_clean = _common.per_example_jacobian(apply_fn, params, x)
  jac_adv = _common.per_example_jacobian(apply_fn, params, x_adv)
  return _common.contract_per_example_grads(jac_clean, jac_adv, trace_outputs=trace_outputs)


def mtk_diagonal(apply_fn, params, x, x_adv, *, trace_outputs: bool = False):
  jac_clean = _common.per_example_jacobian(apply_fn, params, x)
  jac_adv = _common.per_example_jacobian(apply_fn, params, x_adv)
  return _common.contract_per_example_grads(
      jac_clean, jac_adv, trace_outputs=trace_outputs, diagonal=True)
