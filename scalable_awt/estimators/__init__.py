"""Kernel-distance estimators between a dense teacher and a masked student.

The quantity (paper eq. 13, `docs/method.md`):

    D = ‖Θ_dense(X, X̃) − Θ_sparse(X, X̃ˢ)‖_F²,

with `Θ_dense` the MTK of `θ ↦ f(θ, ·)` at the dense parameters and
`Θ_sparse` the MTK of the student `θ_s ↦ f(mask ⊙ θ_s, ·)` (taken with respect
to θ_s, so pruned weights contribute nothing; see `_common`). With
`normalize=True` every estimator divides by (its estimate of) ‖Θ_dense‖_F², as
NTT does; the default is `normalize=False` (the raw distance, as the signature
other tools rely on says).

Estimators, selectable by name (`ESTIMATORS`; `num_samples` = k, None = default):

| name | estimates | k means | default k | unbiased for D |
| --- | --- | --- | --- | --- |
| `exact` | D exactly | unused | - | exact |
| `diagonal` | Σ_i Σ_c (Θ_d−Θ_s)[i,i,c,c]² | positions sampled | all n | no (diagonal part only) |
| `block_diagonal` | Σ_i ‖(Θ_d−Θ_s)[i,i]‖_F² | positions sampled | all n | no (diagonal blocks only) |
| `random_projection` | D from Jacobian sketches | directions | 64 | no, +O(1/k) |
| `random_projection_unbiased` | D, U-statistic over sketches | directions | 64 | yes |
| `output_probes` | D, Hutchinson probes | probes | 64 | yes |
| `output_probes_deflated` | D, Hutch++ with teacher deflation | probes | 64 | yes |

Resolve an estimator once with `get(name, num_samples=..., chunk_size=...,
precision=...)`: a frozen `KernelDistance` with two stages. `prepare_teacher`
computes everything that does not depend on the student (exact kernel,
diagonal, sketches, probes and Θ_d·v) once per batch; `distance` is the
cheap, differentiable (w.r.t. `sparse_params`) part to put inside the
student's loss. The functions of the same names that take the estimator's
name (`prepare_teacher`, `student_kernel_distance`, `kernel_distance`) build
that object and call it, for one-off use (tests, benchmarks). All
random draws (directions, probes, sampled positions) are made from the key
given to `prepare_teacher` and stored in the teacher, so the student always
uses the teacher's draws (common random numbers: comparing masks with one
teacher compares them on the same probes).

Under `jax.jit`, `name`, `apply_fn`, `num_samples`, `normalize` and options are
static (close over them with `functools.partial`, or over the `get` object).

`precision="bfloat16"` runs the kernel term's network passes (forward, JVP,
VJP) with bfloat16 parameters and inputs: `apply_fn` is wrapped so that
params and inputs are cast to bfloat16 on the way in and the outputs back to
float32, so probes, products, differences and sums stay float32. Layers that
bring float32 constants of their own (e.g. batch-norm statistics closed over
by `models.make_apply_fn`) promote their outputs back to float32; pass an
`apply_fn` whose model state is bfloat16 to keep the whole pass in bfloat16. The functions are written
on global arrays, so a batch sharded with `NamedSharding(mesh, P("data"))`
gives the same values as one device, with XLA inserting the collectives.

How results go silently wrong: as for the exact kernel, networks must not mix
examples (batch norm in inference mode, `models.make_apply_fn`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from scalable_awt.estimators import _common
from scalable_awt.estimators.diagonal import Diagonal
from scalable_awt.estimators.exact import Exact
from scalable_awt.estimators.output_probes import OutputProbes
from scalable_awt.estimators.random_projection import RandomProjection
from scalable_awt.masks import apply_mask

ESTIMATORS = {
    "exact": lambda **o: Exact(**o),
    "diagonal": lambda **o: Diagonal(blocks=False, name="diagonal", **o),
    "block_diagonal": lambda **o: Diagonal(blocks=True, name="block_diagonal", **o),
    "random_projection": lambda **o: RandomProjection(
        unbiased=False, name="random_projection", **o),
    "random_projection_unbiased": lambda **o: RandomProjection(
        unbiased=True, name="random_projection_unbiased", **o),
    "output_probes": lambda **o: OutputProbes(deflate=False, name="output_probes", **o),
    "output_probes_deflated": lambda **o: OutputProbes(
        deflate=True, name="output_probes_deflated", **o),
}
NAMES = tuple(ESTIMATORS)
# Estimators with a `chunk_size` option (probes or directions per pass).
CHUNKED = ("random_projection", "random_projection_unbiased", "output_probes",
           "output_probes_deflated")
# The recommended estimator for the ticket search (docs/estimators.md): unbiased, 30%/10% relative RMS error at k = 8/64 on MLP and CNN.
DEFAULT_ESTIMATOR = "output_probes_deflated"
PRECISIONS = _common.PRECISIONS


def get_estimator(name: str, **options):
  """The estimator object for `name`; options are its dataclass fields."""
  if name not in ESTIMATORS:
    raise ValueError(f"Unknown kernel estimator {name!r}; choose one of {NAMES}.")
  return ESTIMATORS[name](**options)


@dataclasses.dataclass(frozen=True)
class KernelDistance:
  """One kernel-distance estimator with its options fixed (build with `get`).

  `prepare_teacher(apply_fn, dense_params, x, x_adv_dense, *, key)` -> the
  teacher's pytree (the estimator's state and `"norm_sq"`, the estimate of
  ‖Θ_dense‖_F²), stop-gradiented. `distance(teacher, apply_fn, sparse_params,
  mask, x, x_adv_sparse, *, normalize=False)` -> the estimated
  ‖Θ_dense − Θ_sparse‖_F² (divided by `norm_sq` if `normalize`),
  differentiable w.r.t. `sparse_params` and `x_adv_sparse`. Hashable, so it
  may be closed over or passed as a static argument of `jax.jit`.
  """
  estimator: Any
  num_samples: int | None = None
  precision: str = "float32"

  @property
  def name(self) -> str:
    return self.estimator.name

  def prepare_teacher(self, apply_fn, dense_params, x, x_adv_dense, *, key) -> dict[str, Any]:
    fn = _common.in_precision(apply_fn, self.precision)
    dense_params = jax.lax.stop_gradient(dense_params)
    teacher = self.estimator.prepare_teacher(fn, dense_params, x, x_adv_dense, key=key,
                                             num_samples=self.num_samples)
    return jax.lax.stop_gradient(teacher)

  def distance(self, teacher, apply_fn, sparse_params, mask, x, x_adv_sparse, *,
               normalize: bool = False) -> jax.Array:
    fn = _common.in_precision(apply_fn, self.precision)
    sparse_fn = _common.masked_apply_fn(fn, mask)
    distance = self.estimator.student_distance(teacher, sparse_fn, sparse_params, x,
                                               x_adv_sparse)
    if normalize:
      distance = distance / teacher["norm_sq"]
    return distance

  def kernel_estimate(self, teacher):
    """The (n, m, C, C) estimate of Θ_dense, or None if the estimator makes none."""
    return self.estimator.kernel_estimate(teacher)


def get(name: str, *, num_samples: int | None = None, chunk_size: int = 0,
        precision: str = "float32", **options) -> KernelDistance:
  """The estimator `name`, resolved once: a `KernelDistance`.

  `num_samples` = k (None: the estimator's default); `chunk_size` = probes or
  directions per pass (estimators in `CHUNKED` only; 0 = all at once);
  `precision`: one of `PRECISIONS` (see the module docstring). Other
  `options` are the estimator's dataclass fields (`implementation=`,
  `distribution=`, ...).
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision={precision!r}; choose one of {PRECISIONS}.")
  if chunk_size:
    if name in ESTIMATORS and name not in CHUNKED:
      raise ValueError(f"chunk_size={chunk_size} applies to {CHUNKED} only, not {name!r}.")
    options = dict(options, chunk_size=chunk_size)
  return KernelDistance(get_estimator(name, **options), num_samples=num_samples,
                        precision=precision)


def prepare_teacher(name: str, apply_fn, dense_params, x, x_adv_dense, *, key,
                    num_samples: int | None = None, **options) -> dict[str, Any]:
  """Everything about the dense teacher that the student's loss needs.

  `get(name, num_samples=num_samples, **options).prepare_teacher(...)`, plus
  `"outputs"` = f(θ_0, X̃) (for `student_target_distance`). Compute it once
  per batch, outside the student's gradient.
  """
  distance = get(name, num_samples=num_samples, **options)
  teacher = distance.prepare_teacher(apply_fn, dense_params, x, x_adv_dense, key=key)
  outputs = apply_fn(jax.lax.stop_gradient(dense_params), x_adv_dense)
  return dict(teacher, outputs=jax.lax.stop_gradient(outputs))


def student_kernel_distance(name: str, teacher, apply_fn, sparse_params, mask, x,
                            x_adv_sparse, *, key=None, normalize: bool = False,
                            **options) -> jax.Array:
  """The estimated kernel distance for the student `f(mask ⊙ sparse_params, ·)`.

  `get(name, **options).distance(...)`. Differentiable w.r.t. `sparse_params`
  (and `x_adv_sparse`). `key` is accepted for a uniform interface; the random
  draws are the teacher's.
  """
  del key
  options.pop("num_samples", None)  # Fixed by the teacher's draws.
  return get(name, **options).distance(teacher, apply_fn, sparse_params, mask, x,
                                       x_adv_sparse, normalize=normalize)


def kernel_distance(name: str, apply_fn, dense_params, sparse_params, mask, x,
                    x_adv_dense, x_adv_sparse, *, key, num_samples: int | None = None,
                    normalize: bool = False, **options) -> jax.Array:
  """Estimate of ‖Θ_dense(x, x_adv_dense) − Θ_sparse(x, x_adv_sparse)‖_F².

  `name` is one of `NAMES`; `name="exact"` returns the exact distance. The
  sparse network is `apply_fn(mask ⊙ sparse_params, ·)`. `num_samples` is k
  (probes, directions or sampled positions; None = the estimator's default).
  `normalize=True` divides by the (estimated) ‖Θ_dense‖_F². Extra `options`
  go to `get` (e.g. `chunk_size=`, `precision=`, `implementation=` for exact,
  `distribution=`). Equal to `student_kernel_distance(prepare_teacher(...))`.
  """
  distance = get(name, num_samples=num_samples, **options)
  teacher = distance.prepare_teacher(apply_fn, dense_params, x, x_adv_dense, key=key)
  return distance.distance(teacher, apply_fn, sparse_params, mask, x, x_adv_sparse,
                           normalize=normalize)


def student_target_distance(teacher, apply_fn, sparse_params, mask, x_adv_sparse, *,
                            normalize: bool = False) -> jax.Array:
  """`target_distance` with the teacher's outputs from `prepare_teacher`."""
  outputs = apply_fn(apply_mask(sparse_params, mask), x_adv_sparse)
  distance = _common.sum_squares(teacher["outputs"] - outputs)
  if normalize:
    distance = distance / _common.sum_squares(teacher["outputs"])
  return distance


def target_distance(apply_fn, dense_params, sparse_params, mask, x_adv_dense,
                    x_adv_sparse, *, normalize: bool = False) -> jax.Array:
  """‖f(θ_0, X̃) − f(mask ⊙ θ_s, X̃ˢ)‖²: a *sum* over examples and outputs.

  A sum (not a mean), like the Frobenius kernel distance beside it, so both
  scale with the batch alike; `normalize=True` divides by ‖f(θ_0, X̃)‖²
  (NTT's normalisation), which makes it batch-size free.
  """
  teacher = {"outputs": jax.lax.stop_gradient(apply_fn(dense_params, x_adv_dense))}
  return student_target_distance(teacher, apply_fn, sparse_params, mask, x_adv_sparse,
                                 normalize=normalize)


def kernel_estimate(name: str, teacher, **options):
  """The estimator's (n, m, C, C) estimate of Θ_dense, or None if it makes none."""
  return get(name, **options).kernel_estimate(teacher)


__all__ = ["ESTIMATORS", "NAMES", "CHUNKED", "DEFAULT_ESTIMATOR", "PRECISIONS",
           "KernelDistance", "get", "get_estimator",
           "prepare_teacher", "student_kernel_distance", "kernel_distance",
           "student_target_distance", "target_distance", "kernel_estimate"]
