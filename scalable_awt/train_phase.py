"""The train phase: adversarial training (PGD, Madry et al.) of one ticket.

Every ticket trains from the *original* dense initialisation with its mask,
the same optimizer, schedule, data order and PGD random starts, in the
resumable `loop` (checkpoints in `checkpoints/train/<method>/`). After each
epoch a row of mean training metrics, and every `curve_every_epochs` the
natural and PGD accuracy on the first `curve_examples` validation examples
(test examples when the config holds out none; `curve_split` says which), go to
the history (the accuracy curve of results.json and plots/accuracy.png).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from scalable_awt import adversarial_training as at
from scalable_awt import attacks
from scalable_awt import checkpoints as ckpt_lib
from scalable_awt import data as data_lib
from scalable_awt import distribution, loop, rng

PyTree = Any


def state_to_tree(state: at.TrainState, key) -> dict:
  tree = {"step": state.step, "params": state.params,
          "model_state": state.model_state, "opt_state": state.opt_state,
          "rng": key}
  if state.mask is not None:
    tree["mask"] = state.mask
  return tree


def tree_to_state(tree: dict) -> tuple[at.TrainState, jax.Array]:
  state = at.TrainState(step=tree["step"], params=tree["params"],
                        model_state=tree["model_state"],
                        opt_state=tree["opt_state"], mask=tree.get("mask"))
  return state, tree["rng"]


def _store(settings, workdir: str, method: str) -> ckpt_lib.Checkpoints:
  return ckpt_lib.Checkpoints(
      os.path.join(workdir, "checkpoints", "train", method),
      keep=settings.checkpoint.keep)


def make_curve_fn(model, *, epsilon, step_size, num_steps, norm, domain):
  """Jitted `(params, model_state, x, y, key) -> (natural, robust) correct counts`."""
  @jax.jit
  def curve(params, model_state, x, y, key):
    def apply_fn(p, inputs):
      return model.apply({"params": p, **model_state}, inputs, train=False)
    natural = jnp.sum(jnp.argmax(apply_fn(params, x), -1) == y)
    if epsilon > 0:
      x_adv = attacks.pgd(apply_fn, params, x, y, key=key, epsilon=epsilon,
                          step_size=step_size, num_steps=num_steps, norm=norm,
                          domain=domain)
      robust = jnp.sum(jnp.argmax(apply_fn(params, x_adv), -1) == y)
    else:
      robust = natural
    return natural, robust
  return curve


def _epoch_bookkeeping(settings, method, *, model, dataset, writer,
                       steps_per_epoch, total):
  """`on_metrics` of the train loop: sums, epoch rows, the accuracy curve."""
  a, t = settings.attack, settings.train
  curve_fn = make_curve_fn(model, epsilon=a.epsilon,
                           step_size=2.5 * a.epsilon / t.curve_pgd_steps,
                           num_steps=t.curve_pgd_steps, norm=a.norm,
                           domain=a.box(dataset.domain))
  # The curve watches the validation split when there is one, so that the
  # test set is touched once per final model (by evaluation); without one it
  # falls back to the test set and says so in every row.
  split = "validation" if len(dataset.validation_labels) else "test"
  images = dataset.validation_images if split == "validation" else dataset.test_images
  labels = dataset.validation_labels if split == "validation" else dataset.test_labels
  n_curve = min(t.curve_examples, len(labels))
  curve_x = data_lib.to_float(images[:n_curve])
  curve_y = labels[:n_curve]
  curve_key = rng.method_key(rng.phase_keys(settings.seed)["eval"], "curve")

  def on_metrics(step, values, state, meta):
    for k, v in values.items():
      meta["sums"][k] = meta["sums"].get(k, 0.0) + v
    meta["count"] += 1
    meta["epoch"] = step // steps_per_epoch
    if step % t.log_every_steps == 0:
      writer.write_scalars(step, {f"{method}/train/{k}": v for k, v in values.items()})
    if step % steps_per_epoch == 0:
      epoch = step // steps_per_epoch
      row = {"epoch": epoch, "step": step,
             **{f"train_{k}": v / max(meta["count"], 1)
                for k, v in meta["sums"].items()}}
      every = t.curve_every_epochs
      if every and (epoch % every == 0 or step == total):
        nat, rob = curve_fn(distribution.to_host(state.params),
                            distribution.to_host(state.model_state), curve_x,
                            curve_y, jax.random.fold_in(curve_key, epoch))
        row["curve_split"] = split
        row[f"{split}_natural_accuracy"] = float(nat) / n_curve
        row[f"{split}_robust_accuracy"] = float(rob) / n_curve
      meta["history"].append(row)
      writer.write_scalars(step, {f"{method}/epoch/{k}": v for k, v in row.items()
                                  if isinstance(v, (int, float))
                                  and k not in ("epoch", "step")})
      writer.flush()
      meta["sums"], meta["count"] = {}, 0
    return f"loss {values['loss']:.3f}"
  return on_metrics


def train_one(settings, workdir, method, *, model, init_params, init_model_state,
              mask, dataset, mesh, writer, status, deadline=None):
  """Adversarially trains one ticket; resumable. `(state, history)`.

  With a `deadline` (`budget.Budget`) training may stop before the end of
  its schedule; status.json and the results then say how far it got.
  """
  spe, total = settings.train.steps(len(dataset.train_labels))
  distribution.check_batch_size(settings.train.batch_size, mesh)
  tx = settings.train.make_optimizer(total)
  key = rng.phase_keys(settings.seed)["train"]  # Same PGD starts for every method.
  fresh = distribution.replicate(state_to_tree(
      at.create_train_state(init_params, init_model_state, tx, mask), key), mesh)
  store = _store(settings, workdir, method)
  tree, meta = loop.restore(
      store, fresh, {"phase": "train", "method": method, "epoch": 0,
                     "steps_per_epoch": spe, "total_steps": total, "sums": {},
                     "count": 0, "history": []},
      sharding=distribution.replicated(mesh),
      must_match=("steps_per_epoch", "total_steps"), name=f"train[{method}]")
  state, key = tree_to_state(tree)
  if int(meta["step"]) >= total:
    store.close()
    status.mark("train", method, {"steps": total})
    return state, meta["history"]
  a = settings.attack
  train_step = at.make_train_step(
      model, tx, epsilon=a.epsilon, step_size=a.train_step_size,
      num_steps=a.train_steps, norm=a.norm, domain=a.box(dataset.domain),
      random_start=a.random_start,
      # A ramp longer than the run (e.g. train.epochs overridden down) ends
      # with the run, so the last steps still train at the full epsilon.
      epsilon_warmup_steps=min(int(settings.train.epsilon_warmup_epochs * spe), total))

  def keyed_step(state, batch, base_key):
    return train_step(state, batch, jax.random.fold_in(base_key, state.step))

  jitted = distribution.data_parallel(keyed_step, mesh)
  batches = data_lib.Batches(dataset.train_images, dataset.train_labels,
                             settings.train.batch_size, seed=settings.seed,
                             sharding=distribution.batch_sharded(mesh))
  train = loop.Loop(
      name=f"train[{method}]", store=store, total_steps=total,
      save_every=settings.checkpoint.every_steps,
      step_fn=lambda state, batch: jitted(state, batch, key),
      get_batch=batches.get, to_tree=lambda state: state_to_tree(state, key),
      on_metrics=_epoch_bookkeeping(settings, method, model=model,
                                    dataset=dataset, writer=writer,
                                    steps_per_epoch=spe, total=total),
      writer=writer, deadline=deadline,
      hint="Lower train.learning_rate or check the data.")
  state, meta = loop.run(train, state, meta)
  status.mark("train", method, {"steps": int(meta["step"]), "planned_steps": total,
                                "truncated": bool(meta.get("truncated"))})
  return state, meta["history"]


def load_trained_state(settings, workdir, method, *, init_params,
                       init_model_state, mask, num_train, mesh):
  """The finished `TrainState` and history of `method`; raises if unfinished."""
  _, total = settings.train.steps(num_train)
  tx = settings.train.make_optimizer(total)
  fresh = at.create_train_state(init_params, init_model_state, tx, mask)
  tree = state_to_tree(fresh, rng.phase_keys(settings.seed)["train"])
  abstract = ckpt_lib.abstract_like(tree, distribution.replicated(mesh))
  with _store(settings, workdir, method) as store:
    restored = store.restore(abstract)
  if restored is None:
    if total == 0:
      return fresh, []
    raise RuntimeError(
        f"No trained model {method!r} in {workdir}: run the train phase "
        "(add 'train' to config.phases).")
  _, tree, meta = restored
  if meta["step"] < total and not meta.get("truncated"):
    raise RuntimeError(
        f"Training of {method!r} in {workdir} stopped at step {meta['step']} of "
        f"{total}; run the train phase to finish it.")
  return tree_to_state(tree)[0], meta["history"]
