"""The dense teacher's adversarial examples and outputs, cached per example.

The teacher θ₀ of the ticket search never changes. With a deterministic
attack (`SearchSettings.teacher_cache=True`: PGD started at x, no random
start), its adversarial example X̃ and outputs f(θ₀, X̃) are a pure function
of the example, so they need computing once per training example, not once
per step: in every epoch after the first, the search step skips the
teacher's PGD (about half of the uncached step's cost).

`TeacherCache` holds them on the host, keyed by the example's position in the
training set (`batch["index"]`), in `float16` by default (half the memory).
What that rounding adds: `float16` keeps 11 significant bits, so every stored
number moves by at most 2⁻¹¹ of its magnitude (relative 4.9e-4); for inputs
in [0, 1] that is at most 2⁻¹² ≈ 2.4e-4 absolute, 0.06 of one 8-bit grey
level, under 1 % of ε = 8/255. Decoded examples are projected back onto the
ε-ball and the data domain, so the attack's constraint stays exact. Examples
are rounded the same way whether served from the cache or recomputed, so
each example always gets the same teacher pieces. `cache_dtype="float32"`
stores them exactly (the cached step then equals `make_search_step` with
the same settings, up to float reassociation).

The cache is bounded by `settings.teacher_cache_gb` (GiB, 2³⁰ bytes) of
arrays. It fills first come, first served and never evicts: batches visit
the examples in a fresh random order every epoch, so any eviction rule would
throw away entries as often as it gains them; a fixed subset instead hits on
every visit. Examples beyond the bound are recomputed (with the same
deterministic PGD) each time they come. The cache lives in memory only: a
resumed search refills it.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scalable_awt import attacks, ticket_search

CACHE_DTYPES = ("float16", "bfloat16", "float32")
GIB = 2**30


class TeacherCache:
  """Per-example teacher pieces, `{"x_adv": (...), "outputs": (C,)}`, on the host.

  `capacity` examples at most, with `capacity * bytes_per_example <=
  max_bytes` (the arrays are allocated at the first `store`, when the
  shapes are known, and never grow).
  """

  def __init__(self, num_examples: int, max_bytes: int, dtype: str = "float16"):
    if dtype not in CACHE_DTYPES:
      raise ValueError(f"cache dtype {dtype!r}; choose one of {CACHE_DTYPES}.")
    if num_examples < 1:
      raise ValueError(f"num_examples={num_examples} must be >= 1.")
    self.num_examples = int(num_examples)
    self.max_bytes = int(max_bytes)
    self.dtype = jnp.dtype(dtype)
    # slot_of[i]: the row holding example i, or -1 if it is not cached.
    self.slot_of = np.full(self.num_examples, -1, np.int64)
    self.capacity = None
    self.size = 0
    self.hits = 0
    self.misses = 0
    self._x_adv = None
    self._outputs = None

  def bytes_per_example(self, example_shape, num_outputs: int) -> int:
    return (math.prod(example_shape) + num_outputs) * self.dtype.itemsize

  @property
  def nbytes(self) -> int:
    """Bytes the cache's arrays hold (0 before the first store)."""
    if self._x_adv is None:
      return 0
    return self._x_adv.nbytes + self._outputs.nbytes

  def _allocate(self, example_shape, num_outputs: int):
    per_example = self.bytes_per_example(example_shape, num_outputs)
    self.capacity = min(self.num_examples, self.max_bytes // per_example)
    # np.empty reserves address space; pages are committed as rows are written.
    self._x_adv = np.empty((self.capacity,) + tuple(example_shape), self.dtype)
    self._outputs = np.empty((self.capacity, num_outputs), self.dtype)

  def round(self, values: np.ndarray) -> np.ndarray:
    """`values` as the cache stores them (rounded to its dtype), as float32."""
    return np.asarray(values).astype(self.dtype).astype(np.float32)

  def lookup(self, index: np.ndarray):
    """`(hit, x_adv, outputs)`: hit (B,) bool; the arrays float32 for the hits' rows.

    Rows that miss are left as zeros in `x_adv` and `outputs` (None before the
    first store).
    """
    index = np.asarray(index)
    if np.any(index < 0) or np.any(index >= self.num_examples):
      raise IndexError(f"example index outside [0, {self.num_examples}).")
    slots = self.slot_of[index]
    hit = slots >= 0
    self.hits += int(hit.sum())
    self.misses += int((~hit).sum())
    if self._x_adv is None:
      return hit, None, None
    x_adv = np.zeros((len(index),) + self._x_adv.shape[1:], np.float32)
    outputs = np.zeros((len(index), self._outputs.shape[1]), np.float32)
    x_adv[hit] = self._x_adv[slots[hit]]
    outputs[hit] = self._outputs[slots[hit]]
    return hit, x_adv, outputs

  def store(self, index: np.ndarray, x_adv: np.ndarray, outputs: np.ndarray) -> None:
    """Stores the examples not yet cached, while there is room."""
    index = np.asarray(index)
    if self._x_adv is None:
      self._allocate(x_adv.shape[1:], outputs.shape[-1])
    # Unique positions only: a batch may repeat an example (padding).
    index, first = np.unique(index, return_index=True)
    new = self.slot_of[index] < 0
    room = self.capacity - self.size
    take = first[new][:room]
    if not take.size:
      return
    slots = np.arange(self.size, self.size + take.size)
    self._x_adv[slots] = x_adv[take]
    self._outputs[slots] = outputs[take]
    self.slot_of[np.asarray(index)[new][:room]] = slots
    self.size += take.size


def _bucket(num: int, batch: int) -> int:
  """Rows to compute `num` misses with: the next power of two, at most `batch`.

  A few padded shapes (log2(batch) + 1 compiles at most) instead of one
  compile per miss count.
  """
  return min(batch, 1 << max(0, num - 1).bit_length())


def make_cached_search_step(apply_fn: Callable, tx: optax.GradientTransformation,
                            settings: ticket_search.SearchSettings, num_examples: int, *,
                            cache_dtype: str = "float16", jit: Callable = jax.jit):
  """Returns `step(state, batch, key) -> (state, metrics)`, a host-level search step.

  The same update as `ticket_search.make_search_step(apply_fn, tx, settings)`
  (whose teacher PGD is deterministic when `settings.teacher_cache`), with
  the teacher's pieces read from a `TeacherCache` (`step.cache`) when the
  example has been seen before. `batch` must carry `"index"` (B,) int32, the
  examples' positions in the training set (`0 <= index < num_examples`).

  Per call: look the batch's indices up on the host; compute the misses with
  a jitted teacher function (padded to a power-of-two row count), round them
  as the cache stores them and store them; then run the jitted student step
  (`ticket_search.make_student_step`, with or without the kernel term as
  `state.step % kernel_period` says) with the teacher's pieces as inputs.

  `jit` compiles both functions: `jax.jit` by default; a data-parallel
  runner passes its own (the student step is
  `(state, batch, teacher, key)`, batch and teacher sharded on their first
  axis; the teacher function is `(dense_params, x, y)`).
  Metrics: those of the search step, plus "teacher_cache_hits" (the
  fraction of this batch served from the cache).
  """
  if not settings.teacher_cache:
    raise ValueError("make_cached_search_step needs settings.teacher_cache=True "
                     "(a deterministic teacher attack); use make_search_step.")
  teacher_fn = ticket_search.make_teacher_fn(apply_fn, settings)
  key_unused = jax.random.key(0)  # The deterministic attack draws nothing.
  compute_teacher = jit(lambda params, x, y: teacher_fn(params, x, y, key_unused))
  # The kernel term every `kernel_period` steps: two programs, chosen here on
  # the host from the step count, rather than `make_search_step`'s
  # `lax.cond`. Both skip the work; but XLA on CPU runs a computation nested in
  # a conditional's branch several times slower than the same computation at
  # the top level of a program (measured, CNN on 32x32x3 at batch 32, kernel
  # on 8 rows at k = 8: 90 s in the branch, 30 s unnested; the step without
  # it 9 s either way). The price: reading `state.step` on the host (one
  # scalar, a sync with the previous step) and a second, cheaper compile.
  period = int(settings.kernel_period)
  if period == 1:
    student_steps = {True: jit(ticket_search.make_student_step(apply_fn, tx, settings))}
  else:
    student_steps = {on: jit(ticket_search.make_student_step(apply_fn, tx, settings,
                                                             kernel=on))
                     for on in (True, False)}
  cache = TeacherCache(num_examples, int(settings.teacher_cache_gb * GIB), cache_dtype)

  @jax.jit
  def project(x_adv, x):
    # Undo what rounding did to the attack's constraint (ε-ball and domain).
    if settings.epsilon == 0:
      return x
    return attacks.project(x_adv, x, epsilon=settings.epsilon, norm=settings.norm,
                           domain=settings.domain)

  def step(state, batch, key):
    index = np.asarray(batch["index"])
    images = np.asarray(batch["image"], np.float32)
    hit, x_adv, outputs = cache.lookup(index)
    miss = np.flatnonzero(~hit)
    if miss.size:
      rows = np.concatenate([miss, np.full(_bucket(miss.size, len(index)) - miss.size,
                                           miss[0])])
      fresh = jax.device_get(compute_teacher(
          state.dense_params, images[rows], np.asarray(batch["label"])[rows]))
      fresh_x_adv = cache.round(fresh["x_adv"][:miss.size])
      fresh_outputs = cache.round(fresh["outputs"][:miss.size])
      if x_adv is None:
        x_adv = np.zeros((len(index),) + fresh_x_adv.shape[1:], np.float32)
        outputs = np.zeros((len(index), fresh_outputs.shape[-1]), np.float32)
      x_adv[miss], outputs[miss] = fresh_x_adv, fresh_outputs
      cache.store(index[miss], fresh_x_adv, fresh_outputs)
    teacher = {"x_adv": project(x_adv, images), "outputs": outputs}
    kernel_on = period == 1 or int(jax.device_get(state.step)) % period == 0
    state, metrics = student_steps[kernel_on](state, batch, teacher, key)
    return state, dict(metrics, teacher_cache_hits=jnp.asarray(hit.mean(), jnp.float32))

  step.cache = cache
  return step
