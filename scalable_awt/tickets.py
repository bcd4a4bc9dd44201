"""The ticket methods: one mask function per name in `config.methods`.

`MASK_FNS[name](settings, params, key, *, context) -> mask` (None = dense)
is the one place where a method plugs in. `settings` is the run's
`settings.Settings` (a config is accepted too and resolved); `params` the
dense initialisation θ₀, the same for every method; `context` what the
searched methods need besides (model, data, mesh, their checkpoint folder).

* "dense": no mask. "random": a uniform random mask. "magnitude": the
  largest |θ₀|. "snip": |θ ⊙ ∂L/∂θ| at θ₀ (Lee et al. 2019). All at
  `search.density`, spread over layers by `search.mask_distribution`.
* "awt": the adversarial winning ticket search (`ticket_search`, paper
  eq. 13) at the config's attack ε: target distance + γ · kernel distance.
* "awt_no_kernel": the same search with γ = 0 (target distance + L2 only),
  the ablation that asks whether matching the MTK matters. It shares awt's
  init, layer densities, data order, schedule and random numbers (PGD starts,
  estimator probes: `KEY_OF`), so the pair differs only in γ.
* "ntt": Neural Tangent Transfer (Liu & Zenke 2020), the AWT search at ε = 0.

The searched methods run the resumable `loop` in `context.workdir`; their
distance curves (the paper's Fig. 3) go to the metric writer, to
`context.workdir/history.json` and to `plots/search_<method>.png`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from scalable_awt import checkpoints as ckpt_lib
from scalable_awt import data as data_lib
from scalable_awt import distribution, loop, masks, models
from scalable_awt import settings as settings_lib
from scalable_awt import ticket_search

PyTree = Any


@dataclasses.dataclass
class SearchContext:
  """What a mask function may use besides `(settings, params, key)`.

  `workdir` is the method's own folder (`checkpoints/search/<method>/`) for a
  resumable search loop; `run_dir` the run's workdir (for plots).
  """
  model: Any
  model_state: PyTree
  dataset: data_lib.Dataset
  mesh: Any
  workdir: str
  writer: Any
  run_dir: str = ""
  deadline: float | None = None  # `budget.Budget`: when the search must stop.
  # Set by the search: {"done": steps run, "planned": steps in the schedule}.
  steps: dict | None = None


MaskFn = Callable[..., PyTree | None]


def dense_ticket(settings, params, key, *, context):
  del settings, params, key, context
  return None


def random_ticket(settings, params, key, *, context):
  del context
  s = settings_lib.of(settings).search
  # One jitted computation, not dozens of eagerly compiled ops.
  return jax.jit(functools.partial(
      masks.random_mask, density=s.density,
      distribution=s.mask_distribution))(key, params)


def magnitude_ticket(settings, params, key, *, context):
  del key, context
  s = settings_lib.of(settings).search
  return jax.jit(functools.partial(
      masks.magnitude_mask, density=s.density,
      distribution=s.mask_distribution))(params)


def snip_ticket(settings, params, key, *, context):
  """SNIP (Lee et al. 2019): |θ ⊙ ∂L/∂θ| of the cross-entropy at init."""
  del key
  s = settings_lib.of(settings).search
  apply_fn = models.make_apply_fn(context.model, context.model_state)
  dataset = context.dataset
  count = min(s.batch_size * 4, len(dataset.train_labels))
  images = jnp.asarray(data_lib.to_float(dataset.train_images[:count]))
  labels = jnp.asarray(dataset.train_labels[:count])

  def loss_fn(p):
    logits = apply_fn(p, images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  scores = jax.jit(masks.snip_scores, static_argnums=0)(loss_fn, params)
  return masks.topk_mask(scores, s.density, distribution=s.mask_distribution)


def _plot_curves(history: list[dict], path: str, title: str) -> None:
  if not history:
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  for ax, name in zip(axes, ("target_distance", "kernel_distance")):
    # With search.kernel_period > 1 only some steps compute the kernel term.
    rows = [row for row in history if name != "kernel_distance"
            or row.get("kernel_computed", 1)]
    ax.plot([row["step"] for row in rows], [row[name] for row in rows])
    ax.set_yscale("log")
    ax.set_xlabel("search step")
    ax.set_title(name.replace("_", " "))
  fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _search_step_fn(apply_fn, tx, pure, key, *, mesh, num_examples):
  """`step_fn(state, batch) -> (state, metrics)` of the search, step folded into `key`.

  Uncached: `ticket_search.make_search_step`, one jitted data-parallel
  function. With `search.teacher_cache`: `teacher_cache.make_cached_search_step`,
  a host-level step that keeps the teacher's examples per training example
  (`batch["index"]`); on one device only for now: on several devices the
  search runs uncached (with a warning), so a config works on any mesh.
  """
  if pure.teacher_cache and mesh.devices.size > 1:
    logging.warning(
        "search.teacher_cache=True runs on one device; this mesh has %d, so "
        "the search computes the teacher's examples every step instead.",
        mesh.devices.size)
    pure = dataclasses.replace(pure, teacher_cache=False)
  if not pure.teacher_cache:
    search_step = ticket_search.make_search_step(apply_fn, tx, pure)

    def keyed_step(state, batch, base_key):
      return search_step(state, batch, jax.random.fold_in(base_key, state.step))

    jitted = distribution.data_parallel(keyed_step, mesh)
    return lambda state, batch: jitted(state, batch, key)
  from scalable_awt import teacher_cache
  cached_step = teacher_cache.make_cached_search_step(apply_fn, tx, pure, num_examples)
  return lambda state, batch: cached_step(
      state, batch, jax.random.fold_in(key, state.step))


def search_loop(settings, params, key, *, context, method: str,
                epsilon: float, kernel_weight: float):
  """The `loop.Loop` of one ticket search, restored; `(loop, state, meta, pure)`.

  `pure` is the `ticket_search.SearchSettings` of the pure step. The step
  function is built here (`ticket_search.make_search_step`), jitted
  data-parallel, with the step folded into `key`.
  """
  s = settings.search
  dataset, mesh = context.dataset, context.mesh
  total = s.total_steps(len(dataset.train_labels))
  pure = s.for_search(epsilon=epsilon, kernel_weight=kernel_weight,
                      total_steps=total, norm=settings.attack.norm,
                      domain=dataset.domain)
  apply_fn = models.make_apply_fn(context.model, context.model_state)
  tx = optax.adam(s.learning_rate)
  distribution.check_batch_size(s.batch_size, mesh, "search.batch_size")
  fresh = distribution.replicate(
      {"state": ticket_search.init_search_state(params, tx, pure)}, mesh)
  store = ckpt_lib.Checkpoints(os.path.join(context.workdir, "state"),
                               keep=settings.checkpoint.keep)
  tree, meta = loop.restore(
      store, fresh, {"phase": "search", "method": method, "total_steps": total,
                     "history": []},
      sharding=distribution.replicated(mesh), name=f"search[{method}]")
  step_fn = _search_step_fn(apply_fn, tx, pure, key, mesh=mesh,
                            num_examples=len(dataset.train_labels))
  # Search batches use seed + 1: an order of their own, the same for every
  # searched method.
  batches = data_lib.Batches(dataset.train_images, dataset.train_labels,
                             s.batch_size, seed=settings.seed + 1,
                             sharding=distribution.batch_sharded(mesh))

  def on_metrics(step, values, state, meta):
    del state
    meta["history"].append({"step": step, **values})
    context.writer.write_scalars(step, {f"{method}/search/{k}": v
                                        for k, v in values.items()})
    kernel = (f"{values['kernel_distance']:.3g}"
              if values.get("kernel_computed", 1) else "not computed at this step")
    return f"target {values['target_distance']:.3g} kernel {kernel}"

  # With search.kernel_period = N > 1 only steps 0, N, 2N, ... compute the
  # kernel term: read the metrics (log, history, progress) at those steps,
  # every multiple of N nearest above log_every_steps, so the logged kernel
  # distance is never an empty one.
  period = int(s.kernel_period)
  metrics_every = -(-int(s.log_every_steps) // period) * period
  search = loop.Loop(
      name=f"search[{method}]", store=store, total_steps=total,
      save_every=settings.checkpoint.every_steps,
      step_fn=step_fn, get_batch=batches.get,
      to_tree=lambda state: {"state": state},
      on_metrics=on_metrics, metrics_every=metrics_every,
      metrics_offset=1 if period > 1 else 0,
      writer=context.writer, deadline=context.deadline,
      hint="Lower search.learning_rate or search.kernel_weight.")
  return search, tree["state"], meta, pure


def run_search(settings, params, key, *, context, method: str, epsilon: float,
               kernel_weight: float):
  """Runs (or resumes) one ticket search; `(mask, final student params)`."""
  settings = settings_lib.of(settings)
  search, state, meta, pure = search_loop(
      settings, params, key, context=context, method=method, epsilon=epsilon,
      kernel_weight=kernel_weight)
  state, meta = loop.run(search, state, meta)
  context.steps = {"done": int(meta["step"]), "planned": search.total_steps}
  with open(os.path.join(context.workdir, "history.json"), "w") as f:
    json.dump(meta["history"], f)
  if context.run_dir:
    _plot_curves(meta["history"],
                 os.path.join(context.run_dir, "plots", f"search_{method}.png"),
                 f"{method} search: distances to the dense teacher")
  mask = ticket_search.final_mask(distribution.to_host(state), pure)
  return mask, distribution.to_host(state.student_params)


def awt_ticket(settings, params, key, *, context):
  """The adversarial winning ticket: search at the attack's ε, γ = kernel_weight."""
  settings = settings_lib.of(settings)
  return run_search(settings, params, key, context=context, method="awt",
                    epsilon=settings.attack.epsilon,
                    kernel_weight=settings.search.kernel_weight)[0]


def awt_no_kernel_ticket(settings, params, key, *, context):
  """The AWT search without its kernel term (γ = 0): target distance + L2."""
  settings = settings_lib.of(settings)
  return run_search(settings, params, key, context=context,
                    method="awt_no_kernel", epsilon=settings.attack.epsilon,
                    kernel_weight=0.0)[0]


def ntt_ticket(settings, params, key, *, context):
  """Neural Tangent Transfer: the same search with ε = 0 (natural inputs)."""
  settings = settings_lib.of(settings)
  return run_search(settings, params, key, context=context, method="ntt",
                    epsilon=0.0, kernel_weight=settings.search.kernel_weight)[0]


# The one place that maps a method name to its mask function.
MASK_FNS: dict[str, MaskFn] = {
    "dense": dense_ticket,
    "random": random_ticket,
    "magnitude": magnitude_ticket,
    "snip": snip_ticket,
    "awt": awt_ticket,
    "awt_no_kernel": awt_no_kernel_ticket,
    "ntt": ntt_ticket,
}
# Methods whose random numbers are another method's, for a paired comparison.
KEY_OF = {"awt_no_kernel": "awt"}
# Methods that search (their tickets come from `run_search`); `load_trained`
# prefers these, "awt" first.
SEARCHED = ("awt", "awt_no_kernel", "ntt")
