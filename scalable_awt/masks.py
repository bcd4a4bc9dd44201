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
                   is_prunable: PrunablePredicate = is_kernel) -> PyTree:
  """Top-k by |weight| in each prunable layer (uniform per-layer density)."""
  prunable = prunable_tree(params, is_prunable)
  return topk_mask_per_layer(jax.tree.map(jnp.abs, params), density, prunable)


def random_mask(key: jax.Array, params: PyTree, density: float,
                is_prunable: PrunablePredicate = is_kernel) -> PyTree:
  """A uniformly random mask with the same per-layer counts as `magnitude_mask`."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.tree.unflatten(treedef, list(jax.random.split(key, len(leaves))))
  scores = jax.tree.map(lambda k, p: jax.random.uniform(k, p.shape), keys, params)
  return topk_mask_per_layer(scores, density, prunable_tree(params, is_prunable))


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
