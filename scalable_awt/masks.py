"""Pruning masks as pytrees that match the parameters.

A mask has the structure of the parameter pytree; each leaf is a float array of
the same shape holding 1.0 (kept) or 0.0 (pruned). Leaves that are not
prunable (biases, normalisation scales and offsets by default) are all ones, so
`apply_mask(params, mask)` is always a plain element-wise product.

Densities are reported two ways: over prunable weights (what the paper's
density means) and over all parameters.
"""

from __future__ import annotations

from collections.abc import Callable
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
PrunablePredicate = Callable[[tuple, jax.Array], bool]


def _path_names(path) -> tuple[str, ...]:
  names = []
  for entry in path:
    for attribute in ("key", "name", "idx"):
      if hasattr(entry, attribute):
        names.append(str(getattr(entry, attribute)))
        break
  return tuple(names)


def is_kernel(path, leaf) -> bool:
  """Default prunability rule: kernels of dense and conv layers, nothing else."""
  del leaf
  return _path_names(path)[-1:] == ("kernel",)


def prunable_tree(params: PyTree, is_prunable: PrunablePredicate = is_kernel) -> PyTree:
  """A pytree of Python bools: which leaves of `params` may be pruned."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: bool(is_prunable(path, leaf)), params)


def apply_mask(params: PyTree, mask: PyTree | None) -> PyTree:
  """`mask ⊙ params`; `mask=None` means dense."""
  if mask is None:
    return params
  return jax.tree.map(lambda p, m: p * m.astype(p.dtype), params, mask)


def ones_like(params: PyTree) -> PyTree:
  """The dense mask."""
  return jax.tree.map(lambda p: jnp.ones(p.shape, p.dtype), params)


def check_density(density: float) -> float:
  density = float(density)
  if not 0.0 < density <= 1.0:
    raise ValueError(
        f"density={density} is outside (0, 1]; pass the fraction of prunable "
        "weights to keep, e.g. 0.087 for 8.7%.")
  return density


def _keep_count(size: int, density: float) -> int:
  # At least one weight per layer so that no layer is cut off entirely.
  return max(1, int(round(density * size)))


def topk_mask_per_layer(scores: PyTree, density: float,
                        prunable: PyTree) -> PyTree:
  """Keeps, in every prunable leaf, exactly round(density * size) largest scores."""
  density = check_density(density)

  def leaf_mask(score, is_prunable):
    if not is_prunable:
      return jnp.ones(score.shape, jnp.float32)
    flat = score.reshape(-1)
    keep = _keep_count(flat.size, density)
    # argsort (not a threshold) so that ties never change the count.
    order = jnp.argsort(-flat, stable=True)
    flat_mask = jnp.zeros(flat.shape, jnp.float32).at[order[:keep]].set(1.0)
    return flat_mask.reshape(score.shape)

  return jax.tree.map(leaf_mask, scores, prunable)


def magnitude_mask(params: PyTree, density: float,
                   is_prunable: PrunablePredicate = is_kernel,
                   distribution: str = "uniform") -> PyTree:
  """Top-k by |weight|, spread over layers by `distribution` (see `topk_mask`)."""
  return topk_mask(jax.tree.map(jnp.abs, params), density, distribution=distribution,
                   is_prunable=is_prunable, params=params)


def random_mask(key: jax.Array, params: PyTree, density: float,
                is_prunable: PrunablePredicate = is_kernel,
                distribution: str = "uniform") -> PyTree:
  """A uniformly random mask with the same per-layer counts as `magnitude_mask`.

  With the same `distribution` as a searched ticket it is that ticket's
  baseline: same layer densities ("uniform", "erk"), or a random spread over
  all prunable weights ("global").
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.tree.unflatten(treedef, list(jax.random.split(key, len(leaves))))
  scores = jax.tree.map(lambda k, p: jax.random.uniform(k, p.shape), keys, params)
  return topk_mask(scores, density, distribution=distribution, is_prunable=is_prunable,
                   params=params)


def density_report(mask: PyTree, is_prunable: PrunablePredicate = is_kernel) -> dict:
  """Exact densities reached: over prunable weights, over all parameters, per layer."""
  prunable = prunable_tree(mask, is_prunable)
  kept_prunable = total_prunable = kept_all = total_all = 0
  per_layer = {}
  for (path, leaf), is_p in zip(jax.tree_util.tree_flatten_with_path(mask)[0],
                                jax.tree.leaves(prunable)):
    kept = int(np.asarray(leaf).sum())
    kept_all += kept
    total_all += leaf.size
    if is_p:
      kept_prunable += kept
      total_prunable += leaf.size
      per_layer["/".join(_path_names(path))] = kept / leaf.size
  return {
      "density_prunable": kept_prunable / max(total_prunable, 1),
      "density_all": kept_all / max(total_all, 1),
      "kept_prunable": kept_prunable,
      "total_prunable": total_prunable,
      "per_layer": per_layer,
  }


def topk_mask_global(scores: PyTree, density: float, prunable: PyTree) -> PyTree:
  """Keeps exactly round(density * total) largest scores over all prunable leaves."""
  density = check_density(density)
  leaves, treedef = jax.tree.flatten(scores)
  flags = jax.tree.leaves(prunable)
  flat = jnp.concatenate([leaf.reshape(-1) for leaf, p in zip(leaves, flags) if p])
  keep = _keep_count(flat.size, density)
  order = jnp.argsort(-flat, stable=True)
  kept = jnp.zeros(flat.shape, jnp.float32).at[order[:keep]].set(1.0)
  out, offset = [], 0
  for leaf, is_prunable in zip(leaves, flags):
    if is_prunable:
      out.append(kept[offset:offset + leaf.size].reshape(leaf.shape))
      offset += leaf.size
    else:
      out.append(jnp.ones(leaf.shape, jnp.float32))
  return jax.tree.unflatten(treedef, out)


def erk_densities(params: PyTree, density: float,
                  is_prunable: PrunablePredicate = is_kernel) -> PyTree:
  """Per-layer densities of Erdős–Rényi-Kernel (Evci et al. 2020), overall `density`.

  A layer's density is proportional to sum(shape) / prod(shape), scaled so the
  prunable weights keep `density` overall; layers that would exceed 1 are kept
  dense and the rest rescaled. Non-prunable leaves get 1.0.
  """
  density = check_density(density)
  leaves, treedef = jax.tree.flatten(params)
  flags = jax.tree.leaves(prunable_tree(params, is_prunable))
  sizes = [leaf.size for leaf in leaves]
  raw = [sum(leaf.shape) / leaf.size for leaf in leaves]
  dense_layers: set[int] = set()
  while True:
    budget = density * sum(s for s, f in zip(sizes, flags) if f)
    budget -= sum(sizes[i] for i in dense_layers)
    scalable = [i for i, f in enumerate(flags) if f and i not in dense_layers]
    scale = budget / max(sum(raw[i] * sizes[i] for i in scalable), 1e-12)
    too_dense = [i for i in scalable if scale * raw[i] > 1.0]
    if not too_dense:
      break
    dense_layers.update(too_dense)
  result = []
  for i, leaf in enumerate(leaves):
    if not flags[i] or i in dense_layers:
      result.append(1.0)
    else:
      result.append(float(min(1.0, scale * raw[i])))
  return jax.tree.unflatten(treedef, result)


def _natural_key(name: str) -> tuple:
  # "Dense_10" after "Dense_9": digits compare as numbers.
  return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def output_layer(params: PyTree, is_prunable: PrunablePredicate = is_kernel) -> str:
  """The path ("Dense_2/kernel") of the prunable leaf taken as the output layer.

  Flax names modules `<Type>_<i>` in call order, so in natural order of their
  paths the last prunable leaf is the last layer of each type; for the MLP,
  CNN and VGG-16 here (convolutions, then dense layers) that is the
  classifier. A model whose last layer sorts earlier needs its own rule.
  """
  paths = ["/".join(_path_names(path))
           for (path, _), flag in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                      jax.tree.leaves(prunable_tree(params, is_prunable)))
           if flag]
  if not paths:
    raise ValueError("params have no prunable leaves, so no output layer.")
  return max(paths, key=_natural_key)


def lth_densities(params: PyTree, density: float, *, prune_rate: float = 0.2,
                  is_prunable: PrunablePredicate = is_kernel) -> PyTree:
  """Per-layer densities of Lottery-Ticket iterative pruning, overall `density`.

  Frankle & Carbin (2019) and Cosentino et al. (2019, the paper's Table 1
  baseline) prune `prune_rate` of every layer per round but the output layer
  at half that rate, so after n rounds a hidden layer keeps (1 − p)ⁿ and the
  output layer (1 − p/2)ⁿ. On LeNet-300-100 with p = 0.2, n = 3, 8, 11, 15, 18
  give exactly the paper's densities 51.3, 16.9, 8.7, 3.6 and 1.8%. Here n is
  real, solved by bisection so that the prunable weights keep `density`
  overall. Non-prunable leaves get 1.0.
  """
  density = check_density(density)
  if not 0.0 < prune_rate < 1.0:
    raise ValueError(f"prune_rate={prune_rate} is outside (0, 1).")
  output = output_layer(params, is_prunable)
  flat = jax.tree_util.tree_flatten_with_path(params)
  flags = jax.tree.leaves(prunable_tree(params, is_prunable))
  is_output = ["/".join(_path_names(path)) == output for path, _ in flat[0]]
  sizes = [leaf.size for _, leaf in flat[0]]
  total = sum(s for s, f in zip(sizes, flags) if f)
  hidden_keep, output_keep = 1.0 - prune_rate, 1.0 - prune_rate / 2

  def kept_fraction(rounds):
    return sum(s * (output_keep if o else hidden_keep) ** rounds
               for s, f, o in zip(sizes, flags, is_output) if f) / total

  low, high = 0.0, 1.0
  while kept_fraction(high) > density:
    high *= 2.0
  for _ in range(200):
    middle = 0.5 * (low + high)
    low, high = (middle, high) if kept_fraction(middle) > density else (low, middle)
  rounds = 0.5 * (low + high)
  result = [(output_keep if o else hidden_keep) ** rounds if f else 1.0
            for f, o in zip(flags, is_output)]
  return jax.tree.unflatten(flat[1], result)


def topk_mask_by_layer_densities(scores: PyTree, densities: PyTree,
                                 prunable: PyTree) -> PyTree:
  """Top-k per layer with a density per leaf (e.g. from `erk_densities`)."""
  def leaf_mask(score, density, is_prunable):
    if not is_prunable or density >= 1.0:
      return jnp.ones(score.shape, jnp.float32)
    flat = score.reshape(-1)
    keep = _keep_count(flat.size, density)
    order = jnp.argsort(-flat, stable=True)
    return jnp.zeros(flat.shape, jnp.float32).at[order[:keep]].set(1.0).reshape(score.shape)
  return jax.tree.map(leaf_mask, scores, densities, prunable)


DISTRIBUTIONS = ("uniform", "erk", "global", "lth")


def topk_mask(scores: PyTree, density: float, *, distribution: str = "uniform",
              is_prunable: PrunablePredicate = is_kernel, params: PyTree = None) -> PyTree:
  """Top-k of `scores` at `density`, spread over layers by `distribution`.

  "uniform": every prunable layer keeps `density`; "erk": per-layer densities
  of `erk_densities(params)`; "global": one threshold over all prunable weights;
  "lth": the layer densities of Lottery-Ticket pruning, `lth_densities(params)`.
  """
  prunable = prunable_tree(scores, is_prunable)
  if distribution == "uniform":
    return topk_mask_per_layer(scores, density, prunable)
  if distribution == "global":
    return topk_mask_global(scores, density, prunable)
  if distribution in ("erk", "lth"):
    densities_fn = erk_densities if distribution == "erk" else lth_densities
    densities = densities_fn(scores if params is None else params, density,
                             is_prunable=is_prunable)
    return topk_mask_by_layer_densities(scores, densities, prunable)
  raise ValueError(f"Unknown mask distribution {distribution!r}; use one of {DISTRIBUTIONS}.")


def snip_scores(loss_fn: Callable[[PyTree], jax.Array], params: PyTree) -> PyTree:
  """SNIP connection sensitivity |θ ⊙ ∂L/∂θ| (Lee et al. 2019) at `params`."""
  grads = jax.grad(loss_fn)(params)
  return jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)
