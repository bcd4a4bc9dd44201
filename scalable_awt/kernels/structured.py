"""Exact MTK from the network's structure, without per-parameter Jacobians.

For a parameter `W` used once, in an operation `y = op(a, W)` that is linear in
`W`, the per-example gradient of output `c` is determined by the operation's
input `a_i` and the output signal `δ_ic = ∂f_c(x_i)/∂y_i` (backpropagated to
`y`). For a dense layer (`y = a W`) that gives

    Θ_W(x_i, x̃_j)[c, d] = ⟨a_i, ã_j⟩ · ⟨δ_ic, δ̃_jd⟩,   i.e.  Θ_W = (A Ãᵀ) ⊙ (Δ Δ̃ᵀ),

so the kernel of the layer costs two small Gram matrices instead of the
`(nC × |W|)` Jacobian. Layers whose inputs carry positions (a dense layer
applied per position, convolutions) either contract over pairs of positions
the same way or, when that is cheaper, form each example's weight gradient
`G_ic = ∂f_c(x_i)/∂W` with one transposed linear op (a weight-gradient
convolution) and take `⟨G_ic, G̃_jd⟩`; the cheaper is chosen per layer from
its shapes. A bias added straight after such a layer (`y = a W + b`, the output of
`a W` used nowhere else) is folded into the layer as `y = [a, 1] [W; b]`:
it has the same signal, so its kernel `Σ ⟨δ_ics, δ̃_jdt⟩` comes with the
layer's for one more input feature instead of a second pass over `δ`. Other
biases and scales (`y = u + b`, `y = u ⊙ s` after reshapes and broadcasts of
a parameter) reduce `δ` over the positions sharing an entry. Every other
parameter leaf falls back to Jacobian contraction.

How it works for any `apply_fn`: the function is traced to a jaxpr once (at
trace time, so it is jit-compatible); each recognised operation ("tap") gets a
zero perturbation added to its output, and a re-evaluation of the jaxpr
returns the taps' inputs. A VJP with respect to the perturbations, vmapped over
the C unit output cotangents, gives every `δ` at once. This is the idea of
neural-tangents' "structured derivatives" (implementation 3), done here on the
jaxpr of an arbitrary function.

Assumption, as for every implementation: examples do not interact (no batch
statistics), so row i of every intermediate belongs to example i.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from scalable_awt.kernels import _common

PRECISION = _common.PRECISION
_LINEAR_OPS = ("dot_general", "conv_general_dilated")
_ELEMENTWISE_OPS = {"add": "bias", "mul": "scale"}
_SHAPE_OPS = ("reshape", "broadcast_in_dim", "squeeze", "convert_element_type", "copy")


@dataclasses.dataclass(frozen=True)
class _Tap:
  """An equation whose output gets a perturbation, and how its parameter enters."""
  eqn_index: int
  leaf_index: int
  kind: str                  # "dot", "conv", "bias" or "scale"
  operand: int               # position of the non-parameter operand in the equation
  index_map: Any = None      # bias/scale: parameter entry of each element of y[i]
  mask_var: Any = None       # a constant mask multiplying the parameter first, if any
  # dot/conv: a bias added to the output, folded in as one more input feature.
  bias_leaf_index: int | None = None
  bias_mask_var: Any = None


def _bind(eqn, invals):
  params = eqn.primitive.get_bind_params(eqn.params)
  if isinstance(params, tuple):  # Older JAX returned (subfuns, params).
    subfuns, params = params
    invals = [*subfuns, *invals]
  with eqn.ctx.manager:
    out = eqn.primitive.bind(*invals, **params)
  return out if eqn.primitive.multiple_results else [out]


def _emulate_shape_op(eqn, value: np.ndarray) -> np.ndarray:
  """Applies a reshape-like equation to a NumPy array (for index maps)."""
  name, params = eqn.primitive.name, eqn.params
  if name == "reshape":
    return value.reshape(params["new_sizes"])
  if name == "broadcast_in_dim":
    shape = params["shape"]
    expanded = [1] * len(shape)
    for axis, dim in enumerate(params["broadcast_dimensions"]):
      expanded[dim] = value.shape[axis]
    return np.broadcast_to(value.reshape(expanded), shape)
  if name == "squeeze":
    return np.squeeze(value, axis=tuple(params["dimensions"]))
  return value  # convert_element_type, copy


class _Analysis:
  """Finds the taps of `apply_fn` for given parameter and input shapes."""

  def __init__(self, apply_fn, params, x):
    self.leaves, self.treedef = jax.tree.flatten(params)
    avals = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in self.leaves]
    x_aval = jax.ShapeDtypeStruct(x.shape, x.dtype)

    def flat_fn(flat_params, inputs):
      return apply_fn(jax.tree.unflatten(self.treedef, flat_params), inputs)

    closed = jax.make_jaxpr(flat_fn)(avals, x_aval)
    self.jaxpr = closed.jaxpr
    self.consts = closed.consts
    self.batch_size = x.shape[0]
    self.taps: list[_Tap] = []
    self._find_taps()
    self._fold_biases()
    tapped = {tap.leaf_index for tap in self.taps} | {
        tap.bias_leaf_index for tap in self.taps if tap.bias_leaf_index is not None}
    self.fallback_leaves = [i for i in range(len(self.leaves)) if i not in tapped]

  def _find_taps(self):
    jaxpr = self.jaxpr
    consumers: dict[Any, list[tuple[int, int]]] = {}
    for index, eqn in enumerate(jaxpr.eqns):
      for position, var in enumerate(eqn.invars):
        if not isinstance(var, jex_core.Literal):
          consumers.setdefault(var, []).append((index, position))
    outvars = {v for v in jaxpr.outvars if not isinstance(v, jex_core.Literal)}
    self._consumers, self._outvars = consumers, outvars
    num_leaves = len(self.leaves)

    param_vars = set(jaxpr.invars[:num_leaves])
    for leaf_index, var in enumerate(jaxpr.invars[:num_leaves]):
      chain = []
      mask_var = None
      # A sparse network `apply_fn(mask ⊙ θ, x)` multiplies the parameter by a
      # constant mask first: J_sparse = J(m ⊙ θ) diag(m), handled by masking
      # the weight gradients.
      uses = consumers.get(var, [])
      if len(uses) == 1 and var not in outvars:
        eqn = jaxpr.eqns[uses[0][0]]
        other = eqn.invars[1 - uses[0][1]] if len(eqn.invars) == 2 else None
        if (eqn.primitive.name == "mul" and other is not None
            and not isinstance(other, jex_core.Literal) and other not in param_vars
            and tuple(other.aval.shape) == tuple(var.aval.shape)
            and self._is_constant(other)):
          mask_var = other
          var = eqn.outvars[0]
      # Follow single-use reshapes/broadcasts of the parameter.
      while True:
        uses = consumers.get(var, [])
        if len(uses) != 1 or var in outvars:
          uses = None
          break
        eqn_index, position = uses[0]
        eqn = jaxpr.eqns[eqn_index]
        if eqn.primitive.name in _SHAPE_OPS and len(eqn.invars) == 1:
          chain.append(eqn)
          var = eqn.outvars[0]
          continue
        break
      if uses is None:
        continue
      tap = self._classify(leaf_index, eqn_index, position, chain)
      if tap is not None:
        self.taps.append(dataclasses.replace(tap, mask_var=mask_var))

  def _fold_biases(self):
    """Folds each bias tap `y = u + b` into the linear tap that produced `u`.

    Valid when `u` is used only by that addition (then `∂f/∂u = ∂f/∂y`, one
    signal for both) and `b` adds entry o to output feature o at every
    position, so that `y[i, s] = [a_is, 1] [W; b]` in `_positions_layout`.
    """
    eqns = self.jaxpr.eqns
    linear_by_output = {eqns[tap.eqn_index].outvars[0]: k for k, tap in enumerate(self.taps)
                        if _position_wise(tap, eqns[tap.eqn_index])}
    folded: dict[int, _Tap] = {}  # linear tap -> its bias tap
    dropped = set()
    for b, tap in enumerate(self.taps):
      if tap.kind == "bias":
        summand = eqns[tap.eqn_index].invars[tap.operand]
        k = linear_by_output.get(summand)
        if (k is not None and k not in folded and summand not in self._outvars
            and len(self._consumers.get(summand, [])) == 1
            and self._bias_per_output_feature(self.taps[k], tap)):
          folded[k] = tap
          dropped.add(b)
    self.taps = [
        dataclasses.replace(tap, bias_leaf_index=folded[k].leaf_index,
                            bias_mask_var=folded[k].mask_var)
        if k in folded else tap
        for k, tap in enumerate(self.taps) if k not in dropped]

  def _bias_per_output_feature(self, linear: _Tap, bias: _Tap) -> bool:
    """Whether the bias adds its entry o to output feature o of `linear`."""
    eqn = self.jaxpr.eqns[linear.eqn_index]
    index = bias.index_map
    if linear.kind == "dot":
      (_, rhs_contract), _ = eqn.params["dimension_numbers"]
      weights_shape = eqn.invars[1].aval.shape
      width_out = math.prod(weights_shape[d] for d in range(len(weights_shape))
                            if d not in rhs_contract)
    else:
      dims = eqn.params["dimension_numbers"]
      index = np.transpose(index, [d - 1 for d in dims.out_spec[2:]] + [dims.out_spec[1] - 1])
      width_out = eqn.outvars[0].aval.shape[dims.out_spec[1]]
    if self.leaves[bias.leaf_index].size != width_out or index.size % width_out:
      return False
    index = index.reshape(-1, width_out)
    return bool(np.all(index == np.arange(width_out)))

  def _is_constant(self, var) -> bool:
    """Whether `var` depends on neither the parameters nor the inputs."""
    if not hasattr(self, "_constants"):
      constants = set(self.jaxpr.constvars)
      for eqn in self.jaxpr.eqns:
        if all(isinstance(v, jex_core.Literal) or v in constants for v in eqn.invars):
          constants.update(eqn.outvars)
      self._constants = constants
    return var in self._constants

  def _classify(self, leaf_index, eqn_index, position, chain):
    eqn = self.jaxpr.eqns[eqn_index]
    name = eqn.primitive.name
    out_aval = eqn.outvars[0].aval
    if not out_aval.shape or out_aval.shape[0] != self.batch_size:
      return None
    other = 1 - position
    other_aval = eqn.invars[other].aval
    if name in _LINEAR_OPS and not chain and position == 1:
      if other_aval.shape[0] != self.batch_size:
        return None
      if name == "dot_general":
        (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
        if lhs_batch or 0 in lhs_contract:
          return None
        return _Tap(eqn_index, leaf_index, "dot", other)
      dims = eqn.params["dimension_numbers"]
      if dims.lhs_spec[0] != 0 or dims.out_spec[0] != 0:
        return None
      if eqn.params["batch_group_count"] != 1:
        return None
      return _Tap(eqn_index, leaf_index, "conv", other)
    if name in _ELEMENTWISE_OPS and len(eqn.invars) == 2:
      if tuple(other_aval.shape) != tuple(out_aval.shape):
        return None
      leaf = self.leaves[leaf_index]
      index = np.arange(leaf.size).reshape(leaf.shape)
      for link in chain:
        index = _emulate_shape_op(link, index)
      if index.ndim != len(out_aval.shape):
        return None
      try:
        index = np.broadcast_to(index, out_aval.shape)
      except ValueError:
        return None
      if not np.all(index == index[:1]):  # The parameter must not vary by example.
        return None
      return _Tap(eqn_index, leaf_index, _ELEMENTWISE_OPS[name], other,
                  np.ascontiguousarray(index[0]))
    return None

  def run(self, flat_params, x, perturbations):
    """Evaluates the network, adding `perturbations` at the taps' outputs.

    Returns `(outputs, tap_inputs)`.
    """
    by_eqn = {tap.eqn_index: k for k, tap in enumerate(self.taps)}
    env = {}

    def read(v):
      return v.val if isinstance(v, jex_core.Literal) else env[v]

    for var, value in zip(self.jaxpr.constvars, self.consts):
      env[var] = value
    for var, value in zip(self.jaxpr.invars, [*flat_params, x]):
      env[var] = value
    tap_inputs = [None] * len(self.taps)
    for index, eqn in enumerate(self.jaxpr.eqns):
      invals = [read(v) for v in eqn.invars]
      outvals = _bind(eqn, invals)
      if index in by_eqn:
        k = by_eqn[index]
        tap_inputs[k] = invals[self.taps[k].operand]
        outvals = [outvals[0] + perturbations[k]]
      for var, value in zip(eqn.outvars, outvals):
        env[var] = value
    (outputs,) = [read(v) for v in self.jaxpr.outvars]
    masks = [tuple(None if var is None else read(var)
                   for var in (tap.mask_var, tap.bias_mask_var)) for tap in self.taps]
    return outputs, (tap_inputs, masks)


@dataclasses.dataclass
class _Factors:
  """What one side (clean or adversarial) contributes to the kernel."""
  tap_inputs: list        # per tap, the non-parameter operand (n, ...)
  signals: list           # per tap, δ with shape (C, n, *y.shape[1:]), outputs first
  fallback_grads: list    # per fallback leaf, (n, C, *leaf.shape)
  masks: list             # per tap, (mask of its parameter, of its folded bias), None if none


def _factors(analysis: _Analysis, apply_fn, x) -> _Factors:
  leaves = analysis.leaves
  zeros = [jnp.zeros(analysis.jaxpr.eqns[t.eqn_index].outvars[0].aval.shape,
                     analysis.jaxpr.eqns[t.eqn_index].outvars[0].aval.dtype)
           for t in analysis.taps]

  def with_perturbations(perturbations):
    return analysis.run(leaves, x, perturbations)

  outputs, vjp_fn, (tap_inputs, masks) = jax.vjp(with_perturbations, zeros, has_aux=True)
  num_outputs = outputs.shape[-1]
  # One cotangent per output class, on every example at once: since examples
  # do not interact, row i of the result is ∂f_c(x_i)/∂y_i.
  cotangents = jnp.broadcast_to(
      jnp.eye(num_outputs, dtype=outputs.dtype)[:, None, :],
      (num_outputs,) + outputs.shape)
  # Kept outputs-first, as the vmap returns them: moving C next to the batch
  # axis would copy every signal, the largest arrays of the computation.
  (signals,) = jax.vmap(vjp_fn)(cotangents)

  fallback_grads = []
  if analysis.fallback_leaves:
    fallback = analysis.fallback_leaves

    def example_fn(sub_leaves, example):
      merged = list(leaves)
      for i, leaf in zip(fallback, sub_leaves):
        merged[i] = leaf
      return apply_fn(jax.tree.unflatten(analysis.treedef, merged), example[None])[0]

    fallback_grads = jax.vmap(jax.jacrev(example_fn), in_axes=(None, 0))(
        [leaves[i] for i in fallback], x)
  return _Factors(list(tap_inputs), signals, fallback_grads, list(masks))


def _position_wise(tap: _Tap, eqn) -> bool:
  """Dense layers and ungrouped convolutions: `y[i, s] = a[i, s] @ W` per position."""
  return tap.kind == "dot" or (
      tap.kind == "conv" and eqn.params["feature_group_count"] == 1)


def _positions_layout(tap: _Tap, eqn, tap_input, signal):
  """Linear taps as position-wise dense layers.

  Returns the inputs as (n, S, K) and the signals as (C, n, S, O): output
  position s of example i is `y[i, s] = a[i, s] @ W` with W as (K, O). For a
  convolution the "inputs" are its patches (im2col), so the same kernel rules
  serve dense layers and convolutions. A folded bias appends a constant input
  feature 1 (K grows by one; its row of W is the bias).
  """
  num_outputs, n = signal.shape[:2]
  if tap.kind == "dot":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    free = [d for d in range(1, tap_input.ndim) if d not in lhs_contract]
    a = jnp.transpose(tap_input, [0, *free, *lhs_contract])
    num_positions = math.prod(tap_input.shape[d] for d in free)
    a = a.reshape(n, num_positions, -1)
    s = signal.reshape(num_outputs, n, num_positions, -1)
  else:
    params = eqn.params
    dims = params["dimension_numbers"]
    weights_shape = eqn.invars[1].aval.shape
    patches = jax.lax.conv_general_dilated_patches(
        tap_input, tuple(weights_shape[d] for d in dims.rhs_spec[2:]),
        params["window_strides"], params["padding"], params["lhs_dilation"],
        params["rhs_dilation"], dims, precision=PRECISION)
    # Patches come in the output layout with K = C_in * window on the feature axis.
    patches = jnp.transpose(patches, [0, *dims.out_spec[2:], dims.out_spec[1]])
    a = patches.reshape(n, -1, patches.shape[-1])
    s = jnp.transpose(signal, [0, 1, *[d + 1 for d in dims.out_spec[2:]],
                               dims.out_spec[1] + 1])
    s = s.reshape(num_outputs, n, a.shape[1], -1)
  if tap.bias_leaf_index is not None:
    a = jnp.concatenate([a, jnp.ones(a.shape[:2] + (1,), a.dtype)], axis=-1)
  return a, s


def _weight_gradients(analysis: _Analysis, tap: _Tap, tap_input, signal):
  """Per-example, per-output weight gradients G[i, c] = ∂f_c(x_i)/∂W: (n, C, *W.shape)."""
  eqn = analysis.jaxpr.eqns[tap.eqn_index]
  leaf = analysis.leaves[tap.leaf_index]

  if tap.kind in ("bias", "scale"):
    values = signal if tap.kind == "bias" else signal * tap_input[None]
    c, n = values.shape[:2]
    values = values.reshape(c, n, -1)
    index = tap.index_map.reshape(-1)
    channels_last = np.array_equal(
        tap.index_map, np.broadcast_to(np.arange(leaf.size), tap.index_map.shape)
    ) if tap.index_map.shape[-1] == leaf.size else False
    if channels_last:
      grads = values.reshape(c, n, -1, leaf.size).sum(axis=2)
    else:
      grads = jax.ops.segment_sum(jnp.moveaxis(values, 2, 0), jnp.asarray(index),
                                  num_segments=leaf.size)
      grads = jnp.moveaxis(grads, 0, 2)
    return jnp.swapaxes(grads, 0, 1).reshape((n, c) + leaf.shape)

  def linear_op(operand, weights):
    invals = [None, None]
    invals[tap.operand] = operand
    invals[1 - tap.operand] = weights
    return _bind(eqn, invals)[0]

  def per_example(operand_i, signal_i):
    transpose = jax.linear_transpose(
        lambda w: linear_op(operand_i[None], w), jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
    return jax.vmap(lambda s: transpose(s[None])[0])(signal_i)

  return jax.vmap(per_example, in_axes=(0, 1))(tap_input, signal)


def _mask_layout(tap: _Tap, eqn, masks, width_in: int, width_out: int):
  """The parameter's (and folded bias's) mask as (K, O), matching
  `_positions_layout`; None if neither is masked."""
  mask, bias_mask = masks
  if mask is None and bias_mask is None:
    return None
  if mask is None:
    weights = jnp.ones((width_in - 1, width_out), bias_mask.dtype)
  elif tap.kind == "dot":
    (_, rhs_contract), _ = eqn.params["dimension_numbers"]
    free = [d for d in range(mask.ndim) if d not in rhs_contract]
    weights = jnp.transpose(mask, [*rhs_contract, *free]).reshape(-1, width_out)
  else:  # Patches are flattened as (C_in, *window); outputs are rhs_spec[0].
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec
    weights = jnp.transpose(mask, [*rhs_spec[1:], rhs_spec[0]]).reshape(-1, width_out)
  if tap.bias_leaf_index is None:
    return weights
  bias = (jnp.ones((1, width_out), weights.dtype) if bias_mask is None
          else bias_mask.reshape(1, width_out).astype(weights.dtype))
  return jnp.concatenate([weights, bias], axis=0)


def _contract_gradients(grads1, grads2, *, trace_outputs, diagonal):
  """Σ ⟨G1[i, c], G2[j, d]⟩ for gradients laid out (n, C, ...), as one matrix product.

  Flattening the parameter axes in the order the gradients were formed keeps
  every reshape free; traced, the sum over c joins the contraction.
  """
  if diagonal:
    return _common.contract_per_example_grads(grads1, grads2, trace_outputs=trace_outputs,
                                              diagonal=True)
  n, num_outputs = grads1.shape[:2]
  m = grads2.shape[0]
  rows = n if trace_outputs else n * num_outputs
  columns = m if trace_outputs else m * num_outputs
  kernel = jax.lax.dot_general(grads1.reshape(rows, -1), grads2.reshape(columns, -1),
                               (((1,), (1,)), ((), ())), precision=PRECISION)
  if trace_outputs:
    return kernel
  return jnp.transpose(kernel.reshape(n, num_outputs, m, num_outputs), (0, 2, 1, 3))


def _tap_kernel(analysis, tap, factors1, factors2, k, *, trace_outputs, diagonal):
  eqn = analysis.jaxpr.eqns[tap.eqn_index]
  a1, s1 = factors1.tap_inputs[k], factors1.signals[k]
  a2, s2 = factors2.tap_inputs[k], factors2.signals[k]
  if not _position_wise(tap, eqn):
    grads1 = _weight_gradients(analysis, tap, a1, s1)
    grads2 = _weight_gradients(analysis, tap, a2, s2)
    mask = factors1.masks[k][0]
    if mask is not None:
      grads1 = grads1 * mask
    return _contract_gradients(grads1, grads2, trace_outputs=trace_outputs, diagonal=diagonal)

  a1, s1 = _positions_layout(tap, eqn, a1, s1)
  a2, s2 = _positions_layout(tap, eqn, a2, s2)
  num_outputs, n, positions, width_out = s1.shape
  m = s2.shape[1]
  width_in = a1.shape[-1]
  mask = _mask_layout(tap, eqn, factors1.masks[k], width_in, width_out)
  pairs = n if diagonal else n * m
  pair = "i" if diagonal else "ij"
  second = "i" if diagonal else "j"
  # Two exact ways; take the one with fewer multiply-adds for these shapes.
  # Factored: Σ_{s,t} ⟨a_is, ã_jt⟩ ⟨δ_ics, δ̃_jdt⟩ (no weight-sized arrays).
  factored_cost = pairs * positions**2 * (width_in + num_outputs**2 * width_out)
  # Gradients: G_ic = Σ_s a_is ⊗ δ_ics, then ⟨G_ic, G̃_jd⟩.
  gradient_cost = ((n + m) * num_outputs * positions * width_in * width_out
                   + pairs * num_outputs**2 * width_in * width_out)
  # Masked (the student `θ_s ↦ f(m ⊙ θ_s, ·)`): the mask sits between the two
  # factors, Σ_{s,t} Σ_{k,o} a_isk ã_jtk M_ko δ_icso δ̃_jdto, so the input
  # products go through M once per pair, a factor ~C² below the gradients'
  # cost for dense layers (no positions); convolutions keep the gradients.
  masked_factored_cost = pairs * positions**2 * width_out * (width_in + num_outputs**2)
  if mask is not None and masked_factored_cost <= gradient_cost:
    products = jnp.einsum(f"isk,{second}tk->{pair}stk", a1, a2, precision=PRECISION)
    weighted = jnp.einsum(f"{pair}stk,ko->{pair}sto", products, mask.astype(products.dtype),
                          precision=PRECISION)
    if trace_outputs:
      return jnp.einsum(f"{pair}sto,ciso,c{second}to->{pair}", weighted, s1, s2,
                        precision=PRECISION)
    return jnp.einsum(f"{pair}sto,ciso,d{second}to->{pair}cd", weighted, s1, s2,
                      precision=PRECISION)
  if mask is None and factored_cost <= gradient_cost:
    gram_in = jnp.einsum(f"isk,{second}tk->{pair}st", a1, a2, precision=PRECISION)
    if trace_outputs:
      gram_out = jnp.einsum(f"ciso,c{second}to->{pair}st", s1, s2, precision=PRECISION)
      return jnp.einsum(f"{pair}st,{pair}st->{pair}", gram_in, gram_out, precision=PRECISION)
    gram_out = jnp.einsum(f"ciso,d{second}to->{pair}cdst", s1, s2, precision=PRECISION)
    return jnp.einsum(f"{pair}st,{pair}cdst->{pair}cd", gram_in, gram_out,
                      precision=PRECISION)
  # Formed as (n, C, O, K): per example one product δ_iᵀ a_i whose output is
  # already in the layout the contraction reads, so no gradient-sized copy.
  grads1 = jnp.einsum("isk,ciso->icok", a1, s1, precision=PRECISION)
  grads2 = jnp.einsum("isk,ciso->icok", a2, s2, precision=PRECISION)
  if mask is not None:
    # The mask is binary, so masking one side masks the inner product.
    grads1 = grads1 * mask.T
  return _contract_gradients(grads1, grads2, trace_outputs=trace_outputs, diagonal=diagonal)


def _kernel(apply_fn, params, x, x_adv, *, trace_outputs, diagonal):
  analysis = _Analysis(apply_fn, params, x)
  if x_adv.shape[0] != x.shape[0]:
    analysis_adv = _Analysis(apply_fn, params, x_adv)
    signature = lambda a: [(t.leaf_index, t.kind, t.bias_leaf_index) for t in a.taps]
    if signature(analysis_adv) != signature(analysis):
      raise ValueError(
          "The structured kernel found different layer structures for the two "
          f"batch sizes {x.shape[0]} and {x_adv.shape[0]}; use "
          "implementation='jacobian' or equal batch sizes.")
  else:
    analysis_adv = analysis
  factors_clean = _factors(analysis, apply_fn, x)
  factors_adv = _factors(analysis_adv, apply_fn, x_adv)
  total = None
  for k, tap in enumerate(analysis.taps):
    term = _tap_kernel(analysis, tap, factors_clean, factors_adv, k,
                       trace_outputs=trace_outputs, diagonal=diagonal)
    total = term if total is None else total + term
  if analysis.fallback_leaves:
    term = _common.contract_per_example_grads(
        factors_clean.fallback_grads, factors_adv.fallback_grads,
        trace_outputs=trace_outputs, diagonal=diagonal)
    total = term if total is None else total + term
  return total


def mtk(apply_fn, params, x, x_adv, *, trace_outputs: bool):
  return _kernel(apply_fn, params, x, x_adv, trace_outputs=trace_outputs, diagonal=False)


def mtk_diagonal(apply_fn, params, x, x_adv, *, trace_outputs: bool = False):
  return _kernel(apply_fn, params, x, x_adv, trace_outputs=trace_outputs, diagonal=True)
