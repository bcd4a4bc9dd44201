"""The runner's mask functions for searched tickets: AWT, NTT and SNIP.

Each has the signature of `train.MASK_FNS` entries,
`mask_fn(config, params, key, *, context) -> mask`. The AWT/NTT search runs
its own resumable loop: its state (student, teacher, Adam state, mask, step)
is checkpointed in `context.workdir` every `checkpoint.every_steps` steps, and
the batch of step s is a function of (seed, s), so a killed search resumes
where it stopped and reproduces the uninterrupted one. Target and kernel
distance curves (the paper's Fig. 3) go to the metric writer and into
`context.workdir/../../../plots/search_<method>.png`.
"""

from __future__ import annotations

import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import optax

from scalable_awt import checkpoints as ckpt_lib
from scalable_awt import data as data_lib
from scalable_awt import distribution, masks, models
from scalable_awt import metrics as metrics_lib
from scalable_awt import ticket_search


def search_settings(config, *, epsilon: float, total_steps: int,
                    domain) -> ticket_search.SearchSettings:
  s, a = config.search, config.attack
  return ticket_search.SearchSettings(
      density=float(s.density), estimator=s.estimator,
      num_samples=None if s.num_samples in (None, 0) else int(s.num_samples),
      estimator_chunk_size=int(s.estimator_chunk_size),
      kernel_weight=float(s.kernel_weight), l2_weight=float(s.l2_weight),
      kernel_batch=int(s.kernel_batch), reduction=s.reduction,
      mask_update_period=int(s.mask_update_period),
      density_schedule=s.density_schedule,
      prune_until_fraction=float(s.prune_until_fraction), total_steps=total_steps,
      mask_distribution=s.mask_distribution, epsilon=float(epsilon),
      attack_step_size=float(s.attack_step_size) if s.attack_step_size else
      2.5 * float(epsilon) / max(int(s.attack_steps), 1),
      attack_steps=int(s.attack_steps), norm=a.norm,
      domain=None if domain is None else tuple(domain))


def _plot_curves(history: list[dict], path: str, title: str) -> None:
  if not history:
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  steps = [row["step"] for row in history]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  for ax, name in zip(axes, ("target_distance", "kernel_distance")):
    ax.plot(steps, [row[name] for row in history])
    ax.set_yscale("log")
    ax.set_xlabel("search step")
    ax.set_title(name.replace("_", " "))
  fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _run_search(config, params, key, *, context, epsilon: float, method: str):
  dataset = context.dataset
  mesh = context.mesh
  batch_size = int(config.search.batch_size)
  steps_per_epoch = data_lib.steps_per_epoch(len(dataset.train_labels), batch_size)
  total = max(1, int(round(float(config.search.epochs) * steps_per_epoch)))
  domain = None if dataset.domain is None else tuple(dataset.domain)
  settings = search_settings(config, epsilon=epsilon, total_steps=total, domain=domain)
  apply_fn = models.make_apply_fn(context.model, context.model_state)
  tx = optax.adam(float(config.search.learning_rate))
  distribution.check_batch_size(batch_size, mesh)

  replicated = distribution.replicated(mesh)
  fresh = ticket_search.init_search_state(params, tx, settings)
  tree = distribution.replicate({"state": fresh}, mesh)
  meta = {"phase": "search", "method": method, "step": 0, "total_steps": total,
          "history": []}
  store = ckpt_lib.Checkpoints(os.path.join(context.workdir, "state"),
                               keep=int(config.checkpoint.keep))
  restored = store.restore(ckpt_lib.abstract_like(tree, replicated))
  if restored is not None:
    _, tree, meta = restored
    if int(meta["total_steps"]) != total:
      store.close()
      raise RuntimeError(
          f"The search checkpoint in {store.directory} was made for "
          f"{meta['total_steps']} steps; this run has {total}. Use a new --workdir.")
    logging.info("search[%s]: resuming at step %d/%d", method, meta["step"], total)
  state = tree["state"]
  step = int(meta["step"])
  history = list(meta["history"])
  step_fn = ticket_search.make_search_step(apply_fn, tx, settings)

  def keyed_step(state, batch, base_key):
    return step_fn(state, batch, jax.random.fold_in(base_key, state.step))

  keyed_step = distribution.data_parallel(keyed_step, mesh)
  batches = data_lib.Batches(dataset.train_images, dataset.train_labels, batch_size,
                             seed=config.seed + 1, start_step=step,
                             sharding=distribution.batch_sharded(mesh))
  progress = metrics_lib.Progress(total, writer=context.writer, name=f"search[{method}]",
                                  first_step=step)
  every = int(config.checkpoint.every_steps)
  log_every = max(1, int(config.search.log_every_steps))
  try:
    while step < total:
      state, step_metrics = keyed_step(state, batches.get(step), key)
      step += 1
      if step % log_every == 0 or step == total:
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        if not math.isfinite(values["loss"]):
          raise FloatingPointError(
              f"search[{method}]: non-finite loss at step {step}; lower "
              "search.learning_rate or search.kernel_weight.")
        history.append({"step": step, **values})
        context.writer.write_scalars(step, {f"{method}/search/{k}": v
                                            for k, v in values.items()})
        progress(step, f"target {values['target_distance']:.3g} "
                       f"kernel {values['kernel_distance']:.3g}")
      if step % every == 0 or step == total:
        meta = {**meta, "step": step, "history": history}
        store.save(step, {"state": state}, meta)
  finally:
    store.close()
  with open(os.path.join(context.workdir, "history.json"), "w") as f:
    json.dump(history, f)
  run_root = os.path.dirname(os.path.dirname(os.path.dirname(context.workdir)))
  _plot_curves(history, os.path.join(run_root, "plots", f"search_{method}.png"),
               f"{method} search: distances to the dense teacher")
  mask = ticket_search.final_mask(distribution.to_host(state), settings)
  return mask, distribution.to_host(state.student_params)


def awt_ticket(config, params, key, *, context):
  """The adversarial winning ticket: search with the config's attack ε."""
  mask, _ = _run_search(config, params, key, context=context,
                        epsilon=float(config.attack.epsilon), method="awt")
  return mask


def ntt_ticket(config, params, key, *, context):
  """Neural Tangent Transfer: the same search with ε = 0 (natural inputs)."""
  mask, _ = _run_search(config, params, key, context=context, epsilon=0.0, method="ntt")
  return mask


def snip_ticket(config, params, key, *, context):
  """SNIP (Lee et al. 2019): |θ ⊙ ∂L/∂θ| of the cross-entropy on one batch at init."""
  del key
  apply_fn = models.make_apply_fn(context.model, context.model_state)
  dataset = context.dataset
  count = min(int(config.search.batch_size) * 4, len(dataset.train_labels))
  images = jnp.asarray(data_lib.to_float(dataset.train_images[:count]))
  labels = jnp.asarray(dataset.train_labels[:count])

  def loss_fn(p):
    logits = apply_fn(p, images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  scores = jax.jit(masks.snip_scores, static_argnums=0)(loss_fn, params)
  return masks.topk_mask(scores, float(config.search.density),
                         distribution=config.search.mask_distribution)
