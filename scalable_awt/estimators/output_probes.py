"""`output_probes` and `output_probes_deflated`: Hutchinson in output space.

For `D = Θ_d − Θ_s` (nC × mC) and probes `v ∈ R^{mC}` with `E[v vᵀ] = I`,
`E‖D v‖² = tr(Dᵀ D) = ‖D‖_F²`. `Θ v = J(X) (J(X̃)ᵀ v)` is one VJP followed by
one JVP, so neither kernel is ever formed.

* `output_probes`: `(1/k) Σ_j ‖Θ_d v_j − Θ_s v_j‖²`, Rademacher probes by
  default (their variance lacks the diagonal term of Gaussian ones).
  Unbiased; relative variance `≈ 2(‖DᵀD‖_F² − Σ diag²)/(k ‖D‖_F⁴)`, large when
  D is dominated by a few directions, which kernels usually are.
* `output_probes_deflated`: Hutch++ (Meyer et al. 2021) with the deflation
  subspace taken from the *teacher*: `Q = orth(Θ_dᵀ Θ_d G)` for q = k//2
  Gaussian G (the dominant right singular directions of Θ_d, computed once
  per batch, outside the student's gradient), then

      ‖D Q‖_F² + (1/r) Σ_j ‖D (I − QQᵀ) g_j‖²,   r = k − q Rademacher g_j.

  Unbiased for any Q drawn independently of the g_j, and with far lower
  variance when D's energy lies in Θ_d's top directions (it does: the
  sparse kernel is mostly a shrunken dense one). The student pays k products
  as for plain probes; the teacher pays 3q + r once per batch.

Normalised by the teacher's estimate of ‖Θ_d‖_F² from the same probes (a
ratio estimator: consistent, not exactly unbiased). Teacher state: probes
`(k, m, C)` and their products `Θ_d v` `(k, n, C)`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from scalable_awt.estimators import _common


@dataclasses.dataclass(frozen=True)
class OutputProbes:
  deflate: bool = False
  distribution: str = "rademacher"
  name: str = "output_probes"
  # Probes per pass (0 = all at once); bounds memory, see _common.map_over_samples.
  chunk_size: int = 0
  default_num_samples = 64
  unbiased = True

  def __post_init__(self):
    _common.check_distribution(self.distribution)
    _common.check_chunk_size(self.chunk_size)

  def _products(self, fn, params, x, x_adv, vectors):
    return _common.kernel_vector_products(fn, params, x, x_adv, vectors, self.chunk_size)

  def prepare_teacher(self, apply_fn, params, x, x_adv, *, key, num_samples=None):
    k = _common.check_num_samples(num_samples, self.default_num_samples)
    out_shape = jax.eval_shape(apply_fn, params, x_adv).shape  # (m, C)
    dtype = x_adv.dtype
    key_q, key_r = jax.random.split(key)
    # The deflation basis cannot exceed the mC dimensions it lives in; with
    # q = mC it spans everything and the estimate is exact (r probes vanish).
    q = min(k // 2, math.prod(out_shape)) if self.deflate else 0
    r = k - q
    probes = _common.draw(key_r, (r,) + out_shape, dtype, self.distribution)
    if q:
      g = jax.random.normal(key_q, (q,) + out_shape, dtype)
      theta_g = self._products(apply_fn, params, x, x_adv, g)
      # Θᵀ u = J(X̃) J(X)ᵀ u: the same products with x and x_adv swapped.
      y = self._products(apply_fn, params, x_adv, x, theta_g)
      basis, _ = jnp.linalg.qr(_common.flat_rows(y).T)            # (mC, q)
      basis = jax.lax.stop_gradient(basis)
      flat = _common.flat_rows(probes)                               # (r, mC)
      flat = flat - (flat @ basis) @ basis.T
      probes = flat.reshape(probes.shape)
      basis = basis.T.reshape((q,) + out_shape)
    else:
      basis = jnp.zeros((0,) + out_shape, dtype)
    vectors = jnp.concatenate([basis, probes])
    products = self._products(apply_fn, params, x, x_adv, vectors)
    weights = jnp.concatenate([jnp.ones((q,), dtype), jnp.full((r,), 1.0 / r, dtype)])
    norm_sq = jnp.sum(weights * jnp.sum(jnp.square(_common.flat_rows(products)), -1))
    return {"vectors": vectors, "products": products, "weights": weights,
            "norm_sq": norm_sq}

  def student_distance(self, teacher, sparse_fn, sparse_params, x, x_adv_sparse):
    products = self._products(sparse_fn, sparse_params, x, x_adv_sparse, teacher["vectors"])
    residual = _common.flat_rows(teacher["products"] - products)
    return jnp.sum(teacher["weights"] * jnp.sum(jnp.square(residual), -1))

  def kernel_estimate(self, teacher):
    return None  # Probes give products Θv, not a kernel.
