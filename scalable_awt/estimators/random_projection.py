"""`random_projection` and `random_projection_unbiased`: Jacobian sketches.

With k random parameter-space directions `r_j` (Gaussian or Rademacher,
`E[r rᵀ] = I`, drawn leaf by leaf from a key; never a P × k matrix), the
sketch `S(X) = J(X) R ∈ R^{nC×k}` costs k JVPs, and

    Θ̂ = S(X) S(X̃)ᵀ / k = (1/k) Σ_j s_j(X) s_j(X̃)ᵀ,     E[Θ̂] = Θ.

The same directions serve the dense teacher and the masked student (whose
JVP masks them by itself, `s^s_j = J_f M r_j`), so errors common to both
cancel in the difference. Per direction the difference is the rank-two matrix
`D_j = a_j b_jᵀ − c_j e_jᵀ` (a, b: teacher on X, X̃; c, e: student on X, X̃ˢ);
with `M_jl = ⟨D_j, D_l⟩` (k × k, from Gram matrices of the sketches, so the
nC × nC kernels are never formed):

* `random_projection` (plain): `‖Θ̂_d − Θ̂_s‖_F² = Σ_jl M_jl / k²`. Biased upwards
  by `Σ_j Var-like terms / k = O(1/k)`: it over-weights the noise.
* `random_projection_unbiased`: `Σ_{j≠l} M_jl / (k(k−1))`, the U-statistic:
  `D_j` and `D_l` are independent for j ≠ l, so each term has mean exactly
  `‖Θ_d − Θ_s‖_F²`. It is the two-independent-sketches estimator
  `⟨Θ̂¹_d − Θ̂¹_s, Θ̂²_d − Θ̂²_s⟩` averaged over every split of the k directions,
  hence never worse. Needs k >= 2; can be negative for small k.

Normalised by the teacher's own estimate of ‖Θ_d‖_F² (plain or U-statistic,
the same directions). Teacher state: the key and the sketches `S_d(X)`,
`S_d(X̃)` (2·k·n·C numbers). Student cost: 2k JVPs (X and X̃ˢ).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from scalable_awt.estimators import _common


@dataclasses.dataclass(frozen=True)
class RandomProjection:
  unbiased: bool = False
  distribution: str = "gaussian"
  name: str = "random_projection"
  # Directions per pass (0 = all at once); bounds memory, see _common.map_over_samples.
  chunk_size: int = 0
  default_num_samples = 64

  def __post_init__(self):
    _common.check_distribution(self.distribution)
    _common.check_chunk_size(self.chunk_size)

  def _sketch(self, fn, params, x, key, k):
    return _common.sketch(fn, params, x, key, k, self.distribution, self.chunk_size)

  def _k(self, num_samples):
    return _common.check_num_samples(num_samples, self.default_num_samples,
                                     minimum=2 if self.unbiased else 1)

  def _combine(self, pair_matrix):
    k = pair_matrix.shape[0]
    total = jnp.sum(pair_matrix)
    if self.unbiased:
      return (total - jnp.trace(pair_matrix)) / (k * (k - 1))
    return total / k**2

  def prepare_teacher(self, apply_fn, params, x, x_adv, *, key, num_samples=None):
    k = self._k(num_samples)
    s_clean = self._sketch(apply_fn, params, x, key, k)
    s_adv = self._sketch(apply_fn, params, x_adv, key, k)
    teacher_pairs = _common.gram(s_clean, s_clean) * _common.gram(s_adv, s_adv)
    return {"key": key, "clean": s_clean, "adv": s_adv,
            "norm_sq": self._combine(teacher_pairs), "teacher_pairs": teacher_pairs}

  def student_distance(self, teacher, sparse_fn, sparse_params, x, x_adv_sparse):
    k = teacher["clean"].shape[0]
    c = self._sketch(sparse_fn, sparse_params, x, teacher["key"], k)
    e = self._sketch(sparse_fn, sparse_params, x_adv_sparse, teacher["key"], k)
    a, b = teacher["clean"], teacher["adv"]
    cross = _common.gram(a, c) * _common.gram(b, e)
    pairs = (teacher["teacher_pairs"] - cross - cross.T
             + _common.gram(c, c) * _common.gram(e, e))
    return self._combine(pairs)

  def kernel_estimate(self, teacher):
    a, b = teacher["clean"], teacher["adv"]
    return jnp.einsum("knc,kmd->nmcd", a, b, precision=_common.PRECISION) / a.shape[0]
