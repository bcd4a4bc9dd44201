"""The exact Mixed Tangent Kernel (MTK) for any `apply_fn(params, x) -> (batch, C)`.

    Θ(X, X̃) = J(X) J(X̃)ᵀ,   J(X) = ∂f(θ, X)/∂θ ∈ R^{nC × P},

stored as an `(n, m, C, C)` array with `Θ[i, j, c, d] = ⟨∂f_c(x_i)/∂θ,
∂f_d(x̃_j)/∂θ⟩`, where `x` holds the n clean inputs and `x_adv` the m
adversarial ones. `trace_outputs=True` returns the `(n, m)` matrix
`Σ_c Θ[i, j, c, c]`. With `x_adv = x` it is the empirical NTK.

Three implementations, all exact (they agree to float rounding; the tests
check it against each other and against neural-tangents):

* `"jacobian"`: stores both Jacobians and contracts them. Simplest; the oracle.
* `"ntk_vector_products"`: builds Θ column by column from VJP-then-JVP
  products, never storing a Jacobian.
* `"structured"`: contracts each layer's inputs and backpropagated output
  signals separately (`Θ_dense = (A Ãᵀ) ⊙ (Δ Δ̃ᵀ)`), the fastest by far for
  dense and convolutional networks; other parameters fall back to Jacobians.

How results go silently wrong: every implementation assumes that examples do
not interact. A network with batch statistics (batch norm in training mode)
has no per-example Jacobian; evaluate it in inference mode
(`models.make_apply_fn` does).

Precision follows the inputs: float32 by default, float64 with JAX's x64 mode
and float64 inputs and parameters.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from scalable_awt.kernels import jacobian, ntk_vector_products, structured

_IMPLEMENTATIONS = {
    "jacobian": jacobian,
    "ntk_vector_products": ntk_vector_products,
    "structured": structured,
}
IMPLEMENTATIONS = tuple(_IMPLEMENTATIONS)


def _implementation(name: str):
  if name not in _IMPLEMENTATIONS:
    raise ValueError(
        f"Unknown MTK implementation {name!r}; choose one of {IMPLEMENTATIONS}.")
  return _IMPLEMENTATIONS[name]


def _check_inputs(x, x_adv):
  if x.ndim < 2 or x_adv.ndim < 2:
    raise ValueError(
        f"x and x_adv need a leading batch axis; got shapes {x.shape} and {x_adv.shape}.")
  if x.shape[1:] != x_adv.shape[1:]:
    raise ValueError(
        f"x and x_adv must have the same example shape; got {x.shape[1:]} and "
        f"{x_adv.shape[1:]}.")


def _chunks(x, chunk_size: int):
  """Pads the batch to a multiple of chunk_size and splits it: (blocks, chunk, ...)."""
  num_blocks = -(-x.shape[0] // chunk_size)
  padding = num_blocks * chunk_size - x.shape[0]
  # Padding rows are real inputs (copies of row 0) so no NaN can appear;
  # their kernel entries are cut off below.
  if padding:
    x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (padding,) + x.shape[1:])])
  return x.reshape((num_blocks, chunk_size) + x.shape[1:])


def exact_mtk(apply_fn, params, x, x_adv, *, trace_outputs: bool = False,
              implementation: str = "jacobian", chunk_size: int | None = None):
  """The exact MTK Θ(x, x_adv): `(n, m, C, C)`, or `(n, m)` if `trace_outputs`.

  Args:
    apply_fn: `apply_fn(params, inputs) -> (batch, C)` outputs; any pytree params.
    params: the parameters θ at which the kernel is taken.
    x: n clean inputs, shape `(n, ...)`.
    x_adv: m adversarial inputs, shape `(m, ...)` (same example shape).
    trace_outputs: sum the diagonal over output pairs, returning `(n, m)`.
    implementation: "jacobian" (default, the oracle), "ntk_vector_products"
      or "structured" (fastest for dense/conv networks).
    chunk_size: compute the kernel in blocks of at most chunk_size rows of x
      and of x_adv (through `lax.map`), bounding memory; None computes it in
      one block.

  Jit-compatible (`implementation`, `trace_outputs` and `chunk_size` static).
  """
  _check_inputs(x, x_adv)
  _implementation(implementation)
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f"chunk_size={chunk_size} must be a positive integer or None.")
  return _exact_mtk_jit(apply_fn, params, x, x_adv, trace_outputs=trace_outputs,
                        implementation=implementation, chunk_size=chunk_size)


# Always compiled: called eagerly, the structured implementation would run its
# jaxpr interpreter op by op, orders of magnitude slower. Inside an outer jit
# this inner jit is simply inlined.
@functools.partial(jax.jit, static_argnames=(
    "apply_fn", "trace_outputs", "implementation", "chunk_size"))
def _exact_mtk_jit(apply_fn, params, x, x_adv, *, trace_outputs, implementation,
                   chunk_size):
  impl = _implementation(implementation)

  def block(rows, cols):
    return impl.mtk(apply_fn, params, rows, cols, trace_outputs=trace_outputs)

  if chunk_size is None or (chunk_size >= x.shape[0] and chunk_size >= x_adv.shape[0]):
    return block(x, x_adv)
  row_blocks, col_blocks = _chunks(x, chunk_size), _chunks(x_adv, chunk_size)
  blocks = jax.lax.map(
      lambda rows: jax.lax.map(lambda cols: block(rows, cols), col_blocks), row_blocks)
  # blocks: (row_blocks, col_blocks, chunk, chunk, ...) -> (rows, cols, ...)
  blocks = jnp.swapaxes(blocks, 1, 2)
  kernel = blocks.reshape((blocks.shape[0] * chunk_size, blocks.shape[2] * chunk_size)
                          + blocks.shape[4:])
  return kernel[: x.shape[0], : x_adv.shape[0]]


def exact_mtk_diagonal(apply_fn, params, x, x_adv, *, trace_outputs: bool = False,
                       implementation: str = "structured"):
  """The n diagonal blocks Θ(x_i, x̃_i): `(n, C, C)`, or `(n,)` if `trace_outputs`.

  Never builds the full kernel: cost O(nCP) instead of O(n²C²P). Requires
  `x` and `x_adv` to have the same number of rows (x̃_i is x_i's attack).
  """
  _check_inputs(x, x_adv)
  if x.shape[0] != x_adv.shape[0]:
    raise ValueError(
        f"exact_mtk_diagonal pairs x[i] with x_adv[i]; got {x.shape[0]} and "
        f"{x_adv.shape[0]} rows.")
  _implementation(implementation)
  return _exact_mtk_diagonal_jit(apply_fn, params, x, x_adv, trace_outputs=trace_outputs,
                                 implementation=implementation)


@functools.partial(jax.jit, static_argnames=("apply_fn", "trace_outputs", "implementation"))
def _exact_mtk_diagonal_jit(apply_fn, params, x, x_adv, *, trace_outputs, implementation):
  return _implementation(implementation).mtk_diagonal(
      apply_fn, params, x, x_adv, trace_outputs=trace_outputs)


__all__ = ["exact_mtk", "exact_mtk_diagonal", "IMPLEMENTATIONS"]
