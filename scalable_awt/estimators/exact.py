"""`exact`: the kernel distance from the exact MTK (the validation oracle).

    D = ‖Θ_dense(X, X̃) − Θ_sparse(X, X̃ˢ)‖_F²,   normalised: D / ‖Θ_dense‖_F².

Uses `scalable_awt.kernels.exact_mtk`; the teacher stores Θ_dense `(n, m, C, C)`.
Cost and memory are those of the chosen exact implementation: `"structured"`
(default) is fastest for the dense teacher, but the masked student's kernel
leaves fall back to per-example Jacobians there (`(n + m)·C·P` numbers), so at
large P pass `implementation="ntk_vector_products"` with a `chunk_size`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from scalable_awt.estimators import _common
from scalable_awt.kernels import exact_mtk


@dataclasses.dataclass(frozen=True)
class Exact:
  implementation: str = "structured"
  student_implementation: str | None = None  # None: same as implementation.
  chunk_size: int | None = None
  name: str = "exact"
  default_num_samples = None
  unbiased = True  # Exact, in fact.

  def prepare_teacher(self, apply_fn, params, x, x_adv, *, key=None, num_samples=None):
    del key, num_samples
    kernel = exact_mtk(apply_fn, params, x, x_adv, implementation=self.implementation,
                       chunk_size=self.chunk_size)
    return {"kernel": kernel, "norm_sq": _common.sum_squares(kernel)}

  def student_kernel(self, sparse_fn, sparse_params, x, x_adv_sparse):
    return exact_mtk(sparse_fn, sparse_params, x, x_adv_sparse,
                     implementation=self.student_implementation or self.implementation,
                     chunk_size=self.chunk_size)

  def student_distance(self, teacher, sparse_fn, sparse_params, x, x_adv_sparse):
    kernel = self.student_kernel(sparse_fn, sparse_params, x, x_adv_sparse)
    return _common.sum_squares(teacher["kernel"] - kernel)

  def kernel_estimate(self, teacher):
    return teacher["kernel"]
