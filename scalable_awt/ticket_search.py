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

Defaults follow NTT's reference implementation (`config_schema.py`, `config.search`):
the kernel is matched on the first `kernel_batch` = 32 examples of each batch
of 64 (a 32 × 32 × C × C kernel, not traced), both distances are means over
their entries (not divided by the dense norms), γ = 1e-3, an L2 term on the
kept weights scaled by 1/density, Adam at 5e-4, the mask recomputed every 100
steps, biases never masked.

Everything that does not depend on the student is computed outside the
student's gradient: the teacher's PGD examples and outputs (`make_teacher_fn`,
per example) and its kernel pieces (`estimators.KernelDistance.
prepare_teacher`, per kernel sub-batch). The student's PGD examples are
treated as constants in its gradient (Danskin's theorem, as in adversarial
training).

Levers on the step's cost (settings of `SearchSettings`):

* `kernel_batch`: the kernel term is taken on the first `kernel_batch` rows.
* `kernel_period` = N: the kernel term (teacher kernel pieces and the
  student's distance) is computed only on the updates from steps s with
  s % N == 0; the other updates use target + L2 only (their "kernel_distance"
  metric is 0 and "kernel_computed" is 0). The weight γ is not rescaled, so
  on average the kernel term pulls with γ/N.
* `teacher_cache`: the teacher θ₀ is fixed, so with a deterministic attack
  (PGD started at x, no random start: a change of the attack, made only when
  this is on) its adversarial examples and outputs are a pure function of the
  example. `make_search_step` then computes them in-step without the random
  start; `teacher_cache.make_cached_search_step` stores them per example
  index on the host and skips the teacher's PGD on every later visit.
* `precision` = "bfloat16": the kernel term's network passes in bfloat16
  (`estimators.get`), sums in float32.

Steps: `make_search_step` (one jitted function, teacher computed in-step),
built from `make_teacher_fn` and `make_student_step`, which the cached step
also uses (jitted separately, with the teacher's pieces as an input).
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
  """Hyper-parameters of the search; see `scalable_awt/config_schema.py`
  (`config.search`, `config.attack`) for their meaning and defaults."""
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
  kernel_period: int = 1
  teacher_cache: bool = False
  teacher_cache_gb: float = 2.0
  precision: str = "float32"

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
    if int(self.kernel_period) != self.kernel_period or self.kernel_period < 1:
      raise ValueError(f"search.kernel_period={self.kernel_period} must be an integer >= 1.")
    if int(self.kernel_batch) != self.kernel_batch or self.kernel_batch < 1:
      raise ValueError(f"search.kernel_batch={self.kernel_batch} must be an integer >= 1.")
    if self.teacher_cache_gb < 0:
      raise ValueError(f"search.teacher_cache_gb={self.teacher_cache_gb} must be >= 0.")
    if self.precision not in estimators.PRECISIONS:
      raise ValueError(f"search.precision={self.precision!r}; "
                       f"choose one of {estimators.PRECISIONS}.")

  @property
  def teacher_random_start(self) -> bool:
    """The teacher's PGD starts at random unless its examples are cached."""
    return not self.teacher_cache


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


def _attack(apply_fn, params, x, y, key, settings: SearchSettings, *,
            random_start: bool = True):
  if settings.epsilon == 0:
    return x
  return jax.lax.stop_gradient(attacks.pgd(
      apply_fn, params, x, y, key=key, epsilon=settings.epsilon,
      step_size=settings.attack_step_size, num_steps=settings.attack_steps,
      norm=settings.norm, domain=settings.domain, random_start=random_start))


def _step_keys(key):
  """The step key's three uses: teacher PGD, student PGD, estimator draws."""
  return jax.random.split(key, 3)


def make_teacher_fn(apply_fn: Callable, settings: SearchSettings):
  """Returns `teacher_fn(dense_params, x, y, key) -> {"x_adv", "outputs"}`.

  The dense teacher's per-example pieces: X̃ = PGD(θ₀, X) (`(B, ...)`) and
  f(θ₀, X̃) (`(B, C)`), both stop-gradiented. With `settings.teacher_cache`
  the PGD starts at x (no random start) and `key` is unused, so each row is a
  pure function of its example (what makes the per-example cache valid).
  """
  def teacher_fn(dense_params, x, y, key):
    x_adv = _attack(apply_fn, dense_params, x, y, key, settings,
                    random_start=settings.teacher_random_start)
    outputs = jax.lax.stop_gradient(apply_fn(dense_params, x_adv))
    return {"x_adv": x_adv, "outputs": outputs}
  return teacher_fn


def kernel_distance_of(settings: SearchSettings) -> estimators.KernelDistance:
  """The settings' kernel-distance estimator, resolved once."""
  return estimators.get(settings.estimator, num_samples=settings.num_samples,
                        chunk_size=settings.estimator_chunk_size,
                        precision=settings.precision)


def make_student_step(apply_fn: Callable, tx: optax.GradientTransformation,
                      settings: SearchSettings, *, kernel: bool | None = None):
  """Returns `student_step(state, batch, teacher, key) -> (state, metrics)`.

  One update of the student given the teacher's per-example pieces
  `teacher = {"x_adv": (B, ...), "outputs": (B, C)}` (from `make_teacher_fn`
  or a cache). `key` is the whole step's key (split as in `make_search_step`,
  so both steps draw the same student PGD start and estimator probes).

  `kernel`: None (the search) computes the kernel term when
  `state.step % settings.kernel_period == 0`; True / False always / never
  (fixed at trace time: what the benchmarks use to cost the two kinds of
  update separately).

  Why `lax.cond` here for `kernel_period`: it keeps the step one pure,
  jittable function of the state (no host read of `state.step`, one
  compile), and an XLA conditional executes only the branch taken (it is not
  flattened into a select unless the step is vmapped, which it never is), so
  a step without the kernel term skips the teacher's kernel pieces, the
  student's JVP/VJP products and their backward pass. Measured caveat: XLA on
  CPU runs the branch's computation ~3× slower than the same computation at
  the top level of a program (CNN, 32x32x3, batch 32, kernel on 8 rows at
  k = 8: 90 s vs 30 s; the step without it 9 s either way), so the host-level
  `teacher_cache.make_cached_search_step` compiles `kernel=True` and
  `kernel=False` instead and picks one on the host.
  """
  distance = kernel_distance_of(settings)
  period = int(settings.kernel_period)
  normalize = settings.reduction == "normalized"

  def step_fn(state: SearchState, batch, teacher, key):
    x, y = batch["image"], batch["label"]
    _, key_student, key_estimator = _step_keys(key)
    kernel_rows = min(settings.kernel_batch, x.shape[0])
    x_kernel = x[:kernel_rows]
    x_adv_dense, teacher_outputs = teacher["x_adv"], teacher["outputs"]

    sparse_params = masks.apply_mask(state.student_params, state.mask)
    x_adv_sparse = _attack(apply_fn, sparse_params, x, y, key_student, settings)
    num_outputs = teacher_outputs.shape[-1]
    density = density_at(state.step, settings)

    def kernel_term(student_params):
      # The teacher's kernel pieces live here, inside the branch, so that a
      # step without the kernel term skips them too.
      kernel_teacher = distance.prepare_teacher(
          apply_fn, state.dense_params, x_kernel, x_adv_dense[:kernel_rows],
          key=key_estimator)
      return distance.distance(kernel_teacher, apply_fn, student_params, state.mask,
                               x_kernel, x_adv_sparse[:kernel_rows], normalize=normalize)

    def no_kernel_term(student_params):
      del student_params
      return jnp.zeros((), jnp.float32)

    if kernel is None and period > 1:
      kernel_on = state.step % period == 0
      kernel_fn = lambda p: jax.lax.cond(kernel_on, kernel_term, no_kernel_term, p)
    else:
      kernel_on = jnp.asarray(kernel is None or kernel)
      kernel_fn = kernel_term if (kernel is None or kernel) else no_kernel_term

    def loss_fn(student_params):
      outputs = apply_fn(masks.apply_mask(student_params, state.mask), x_adv_sparse)
      target = jnp.sum((teacher_outputs - outputs) ** 2)
      kernel_value = kernel_fn(student_params)
      if settings.reduction == "mean":
        target = target / teacher_outputs.size
        kernel_value = kernel_value / (kernel_rows * kernel_rows * num_outputs * num_outputs)
      elif settings.reduction == "normalized":
        target = target / jnp.sum(teacher_outputs ** 2)
      kept = masks.apply_mask(student_params, state.mask)
      prunable = masks.prunable_tree(kept)
      l2 = sum(jnp.sum(p ** 2) for p, flag in zip(jax.tree.leaves(kept),
                                                  jax.tree.leaves(prunable)) if flag)
      loss = target + settings.kernel_weight * kernel_value + settings.l2_weight / density * l2
      return loss, {"target_distance": target, "kernel_distance": kernel_value, "l2": l2}

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
    metrics = dict(parts, loss=loss, density=density,
                   kernel_computed=kernel_on.astype(jnp.float32))
    return new_state, metrics

  return step_fn


def make_search_step(apply_fn: Callable, tx: optax.GradientTransformation,
                     settings: SearchSettings):
  """Returns `search_step(state, batch, key) -> (state, metrics)`.

  `batch = {"image": (B, ...), "label": (B,)}` (other keys are ignored).
  The teacher's pieces are computed in the step (`make_teacher_fn`), then
  the student is updated (`make_student_step`). Metrics: "loss",
  "target_distance", "kernel_distance" (both as used in the loss, i.e. after
  the reduction; the kernel one 0 on steps without the kernel term), "l2",
  "density", "kernel_computed" (1.0 on steps with the kernel term, else 0.0).
  """
  teacher_fn = make_teacher_fn(apply_fn, settings)
  student_step = make_student_step(apply_fn, tx, settings)

  def step_fn(state: SearchState, batch, key):
    key_teacher, _, _ = _step_keys(key)
    teacher = teacher_fn(state.dense_params, batch["image"], batch["label"], key_teacher)
    return student_step(state, batch, teacher, key)

  return step_fn


def final_mask(state: SearchState, settings: SearchSettings) -> PyTree:
  """The ticket's mask: magnitudes of the final student at the target density."""
  return masks.topk_mask(jax.tree.map(jnp.abs, state.student_params), settings.density,
                         distribution=settings.mask_distribution)
