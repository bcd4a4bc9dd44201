"""The adversarial winning ticket search (paper eq. 13, Algorithm 1).

At initialisation θ₀, a masked student θ_s (starting from θ₀) is trained with
Adam on

    L(θ_s) = target(θ_s) + γ · kernel(θ_s) + λ / d · ‖m ⊙ θ_s‖²
    target = ‖f(θ₀, X̃) − f(m ⊙ θ_s, X̃ˢ)‖²
    kernel = ‖Θ_dense(X, X̃) − Θ_sparse(X, X̃ˢ)‖_F²   (any estimator, by name)

where X̃ = PGD(θ₀, X) are the dense teacher's adversarial examples and
X̃ˢ = PGD(m ⊙ θ_s, X) the student's own. Every `mask_update_period` steps the
mask is recomputed from the magnitudes of *all* student weights (pruned
weights keep their values and may come back), at the density the schedule
gives for that step. With ε = 0 this is Neural Tangent Transfer (NTT, Liu &
Zenke 2020), the natural-training baseline.

Defaults follow NTT's reference implementation (see `default_search_config`):
the kernel is matched on the first `kernel_batch` = 32 examples of each batch
of 64 (a 32 × 32 × C × C kernel, not traced), both distances are means over
their entries (not divided by the dense norms), γ = 1e-3, an L2 term on the
kept weights scaled by 1/density, Adam at 5e-4, the mask recomputed every 100
steps, biases never masked.

Everything that does not depend on the student (the teacher's PGD examples,
outputs and kernel pieces) is computed once per step by
`estimators.prepare_teacher`, outside the student's gradient. The student's
PGD examples are treated as constants in its gradient (Danskin's theorem, as
in adversarial training).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from scalable_awt import attacks, estimators, masks

PyTree = Any
DENSITY_SCHEDULES = ("constant", "cubic")
REDUCTIONS = ("mean", "sum", "normalized")


class SearchState(struct.PyTreeNode):
  """The search's whole state (a pytree: checkpointable, jittable).

  `dense_params` (θ₀, the teacher) never changes; it lives in the state so the
  step is a pure function of its arguments and the teacher is not baked into
  the compiled program as a constant.
  """
  step: jax.Array
  student_params: PyTree
  dense_params: PyTree
  opt_state: PyTree
  mask: PyTree


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  """Hyper-parameters of the search; see `configs/default.py` for their meaning."""
  density: float
  estimator: str = "exact"
  num_samples: int | None = None
  estimator_chunk_size: int = 0
  kernel_weight: float = 1e-3
  l2_weight: float = 1e-4
  kernel_batch: int = 32
  reduction: str = "mean"
  mask_update_period: int = 100
  density_schedule: str = "constant"
  prune_until_fraction: float = 0.5
  total_steps: int = 1000
  mask_distribution: str = "uniform"
  epsilon: float = 0.0
  attack_step_size: float = 0.01
  attack_steps: int = 10
  norm: str = "linf"
  domain: tuple | None = (0.0, 1.0)

  def __post_init__(self):
    masks.check_density(self.density)
    if self.estimator not in estimators.NAMES:
      raise ValueError(
          f"search.estimator={self.estimator!r}; choose one of {estimators.NAMES}.")
    if self.estimator_chunk_size and self.estimator not in estimators.CHUNKED:
      raise ValueError(
          f"search.estimator_chunk_size={self.estimator_chunk_size} applies to "
          f"{estimators.CHUNKED} only, not {self.estimator!r}; set it to 0.")
    if self.density_schedule not in DENSITY_SCHEDULES:
      raise ValueError(f"search.density_schedule={self.density_schedule!r}; "
                       f"choose one of {DENSITY_SCHEDULES}.")
    if self.reduction not in REDUCTIONS:
      raise ValueError(f"search.reduction={self.reduction!r}; choose one of {REDUCTIONS}.")
    if self.mask_distribution not in masks.DISTRIBUTIONS:
      raise ValueError(f"search.mask_distribution={self.mask_distribution!r}; "
                       f"choose one of {masks.DISTRIBUTIONS}.")
    if self.mask_update_period < 1:
      raise ValueError(f"search.mask_update_period={self.mask_update_period} must be >= 1.")
    if self.epsilon < 0:
      raise ValueError(f"attack.epsilon={self.epsilon} must be >= 0.")


def density_at(step, settings: SearchSettings):
  """The mask density the schedule asks for at `step`.

  "constant": the target density from the start (NTT). "cubic": the gradual
  schedule of Zhu & Gupta (2017), from 1 down to the target over the first
  `prune_until_fraction` of the search.
  """
  if settings.density_schedule == "constant":
    return jnp.asarray(settings.density, jnp.float32)
  end = max(1, int(settings.prune_until_fraction * settings.total_steps))
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / end, 0.0, 1.0)
  return settings.density + (1.0 - settings.density) * (1.0 - progress) ** 3


def _mask_at_density(student_params, density, settings: SearchSettings):
  scores = jax.tree.map(jnp.abs, student_params)
  if settings.density_schedule == "constant":
    return masks.topk_mask(scores, settings.density, distribution=settings.mask_distribution)
  # Densities that change over time: quantise to the update grid so that the
  # top-k count is static for each branch of a `lax.switch`.
  num_updates = max(1, settings.total_steps // settings.mask_update_period + 1)
  end = max(1, int(settings.prune_until_fraction * settings.total_steps))
  grid = sorted({
      settings.density + (1.0 - settings.density)
      * (1.0 - min(1.0, i * settings.mask_update_period / end)) ** 3
      for i in range(num_updates)} | {settings.density})
  branches = [functools.partial(
      lambda s, d: masks.topk_mask(s, min(1.0, d), distribution=settings.mask_distribution),
      d=d) for d in grid]
  index = jnp.argmin(jnp.abs(jnp.asarray(grid) - density))
  return jax.lax.switch(index, branches, scores)


def init_search_state(dense_params: PyTree, tx: optax.GradientTransformation,
                      settings: SearchSettings) -> SearchState:
  """Student = θ₀; the first mask is the magnitude mask of θ₀ at the step-0 density."""
  mask = _mask_at_density(dense_params, density_at(0, settings), settings)
  return SearchState(step=jnp.zeros((), jnp.int32), student_params=dense_params,
                     dense_params=dense_params, opt_state=tx.init(dense_params), mask=mask)


def _attack(apply_fn, params, x, y, key, settings: SearchSettings):
  if settings.epsilon == 0:
    return x
  return jax.lax.stop_gradient(attacks.pgd(
      apply_fn, params, x, y, key=key, epsilon=settings.epsilon,
      step_size=settings.attack_step_size, num_steps=settings.attack_steps,
      norm=settings.norm, domain=settings.domain))


def make_search_step(apply_fn: Callable, tx: optax.GradientTransformation,
                     settings: SearchSettings):
  """Returns `search_step(state, batch, key) -> (state, metrics)`.

  `batch = {"image": (B, ...), "label": (B,)}`. Metrics: "loss",
  "target_distance", "kernel_distance" (both as used in the loss, i.e. after
  the reduction), "l2", "density".
  """
  estimator = settings.estimator
  # Estimator options: probes/directions per pass, when memory needs chunks.
  options = ({"chunk_size": settings.estimator_chunk_size}
             if settings.estimator_chunk_size else {})

  def step_fn(state: SearchState, batch, key):
    x, y = batch["image"], batch["label"]
    key_teacher, key_student, key_estimator = jax.random.split(key, 3)
    kernel_rows = min(settings.kernel_batch, x.shape[0])
    x_kernel = x[:kernel_rows]

    # Teacher: everything here is independent of the student.
    x_adv_dense = _attack(apply_fn, state.dense_params, x, y, key_teacher, settings)
    teacher = estimators.prepare_teacher(
        estimator, apply_fn, state.dense_params, x_kernel, x_adv_dense[:kernel_rows],
        key=key_estimator, num_samples=settings.num_samples, **options)
    teacher_outputs = jax.lax.stop_gradient(apply_fn(state.dense_params, x_adv_dense))

    sparse_params = masks.apply_mask(state.student_params, state.mask)
    x_adv_sparse = _attack(apply_fn, sparse_params, x, y, key_student, settings)
    num_outputs = teacher_outputs.shape[-1]
    density = density_at(state.step, settings)

    def loss_fn(student_params):
      outputs = apply_fn(masks.apply_mask(student_params, state.mask), x_adv_sparse)
      target = jnp.sum((teacher_outputs - outputs) ** 2)
      kernel = estimators.student_kernel_distance(
          estimator, teacher, apply_fn, student_params, state.mask, x_kernel,
          x_adv_sparse[:kernel_rows], normalize=settings.reduction == "normalized",
          **options)
      if settings.reduction == "mean":
        target = target / teacher_outputs.size
        kernel = kernel / (kernel_rows * kernel_rows * num_outputs * num_outputs)
      elif settings.reduction == "normalized":
        target = target / jnp.sum(teacher_outputs ** 2)
      kept = masks.apply_mask(student_params, state.mask)
      prunable = masks.prunable_tree(kept)
      l2 = sum(jnp.sum(p ** 2) for p, flag in zip(jax.tree.leaves(kept),
                                                  jax.tree.leaves(prunable)) if flag)
      loss = target + settings.kernel_weight * kernel + settings.l2_weight / density * l2
      return loss, {"target_distance": target, "kernel_distance": kernel, "l2": l2}

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.student_params)
    updates, opt_state = tx.update(grads, state.opt_state, state.student_params)
    student_params = optax.apply_updates(state.student_params, updates)
    step = state.step + 1
    mask = jax.lax.cond(
        step % settings.mask_update_period == 0,
        lambda: _mask_at_density(student_params, density_at(step, settings), settings),
        lambda: state.mask)
    new_state = state.replace(step=step, student_params=student_params,
                              opt_state=opt_state, mask=mask)
    metrics = dict(parts, loss=loss, density=density)
    return new_state, metrics

  return step_fn


def final_mask(state: SearchState, settings: SearchSettings) -> PyTree:
  """The ticket's mask: magnitudes of the final student at the target density."""
  return masks.topk_mask(jax.tree.map(jnp.abs, state.student_params), settings.density,
                         distribution=settings.mask_distribution)
