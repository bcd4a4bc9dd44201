"""`diagonal` and `block_diagonal`: the paper's S-AWT (§4.4).

Only the kernel entries that pair an input with its own adversarial example:

* `diagonal`: the n·C numbers `Θ[i, i, c, c] = ⟨∇f_c(x_i), ∇f_c(x̃_i)⟩`,
  distance `Σ_i Σ_c (Θ_d[i,i,c,c] − Θ_s[i,i,c,c])²`;
* `block_diagonal`: the n blocks `Θ[i, i] ∈ R^{C×C}`,
  distance `Σ_i ‖Θ_d[i,i] − Θ_s[i,i]‖_F²`.

What it estimates: that *diagonal part* of the kernel distance, not the full
`‖Θ_d − Θ_s‖_F²` (it ignores every off-diagonal pair (i ≠ j), so as an
estimate of the full distance it is biased, and no k removes the bias).
`num_samples` = k < n draws k positions without replacement per call and
scales by n/k, which is unbiased for the diagonal part; None uses all n
(deterministic). Normalised by the same part of the dense kernel.
Cost O(k·C·P) per evaluation, no n × n coupling. Needs x and x_adv with the
same number of rows (x̃_i is x_i's attack).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scalable_awt.estimators import _common
from scalable_awt.kernels import exact_mtk_diagonal


@dataclasses.dataclass(frozen=True)
class Diagonal:
  blocks: bool = False          # False: the C diagonal entries; True: C × C blocks.
  implementation: str = "structured"
  name: str = "diagonal"
  default_num_samples = None    # All n positions.
  unbiased = False              # For the full distance (unbiased for its diagonal part).

  def _part(self, blocks):
    return blocks if self.blocks else jnp.diagonal(blocks, axis1=-2, axis2=-1)

  def prepare_teacher(self, apply_fn, params, x, x_adv, *, key, num_samples=None):
    n = x.shape[0]
    if x_adv.shape[0] != n:
      raise ValueError(f"{self.name} pairs x[i] with x_adv[i]; got {n} and "
                       f"{x_adv.shape[0]} rows.")
    k = n if num_samples is None else _common.check_num_samples(num_samples, n)
    if k >= n:
      indices = jnp.arange(n)
    else:
      indices = jax.random.choice(key, n, (k,), replace=False)
    part = self._part(exact_mtk_diagonal(apply_fn, params, x[indices], x_adv[indices],
                                         implementation=self.implementation))
    return {"indices": indices, "part": part,
            "scale": jnp.asarray(n / indices.shape[0], part.dtype),
            "norm_sq": _common.sum_squares(part) * (n / indices.shape[0])}

  def student_distance(self, teacher, sparse_fn, sparse_params, x, x_adv_sparse):
    idx = teacher["indices"]
    part = self._part(exact_mtk_diagonal(sparse_fn, sparse_params, x[idx], x_adv_sparse[idx],
                                         implementation=self.implementation))
    return teacher["scale"] * _common.sum_squares(teacher["part"] - part)

  def kernel_estimate(self, teacher):
    return None  # Not a full kernel; see `part`.
