"""The runner's phases: search -> train -> evaluate, each resumable.

`train_and_evaluate(config, workdir)` is the whole run; `main.py` only parses
flags and calls it. Phases:

* **search**: one mask per name in `config.methods`, from the dense
  initialisation, by `MASK_FNS[name](config, params, key, context=...)`
  (`None` = dense). This dict is the one place where a ticket-search method
  plugs in: "awt" will be a function that runs its own checkpointed loop in
  `context.workdir` and returns its mask.
* **train**: each method's ticket is adversarially trained (PGD, Madry et al.)
  from the *original* initialisation, the same for every method.
* **evaluate**: natural and robust accuracy of every trained ticket, written
  to `results.json` with the densities reached and the wall time per phase.

Workdir layout (everything a run needs to resume):

    config.json           resolved config (the first run's; later runs check
                          that results-relevant keys did not change)
    dataset.json          what was loaded (shapes, classes, source)
    status.json           finished phases per method, wall time per phase
    checkpoints/init/     the dense initialisation (params, model state)
    checkpoints/search/<method>/   the method's mask (+ its own search state)
    checkpoints/train/<method>/    TrainState, RNG key, data position, history
    eval/<method>.json    evaluation of the trained ticket
    results.json, plots/accuracy.png, TensorBoard event files (or metrics.jsonl)

Resume priority: the newest readable checkpoint in the workdir, else a fresh
start. RNG keys are `fold_in`s of the seed by phase, method and step, and the
batch of step `s` is a function of `(seed, s)`, so a resumed run repeats the
uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
import time
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scalable_awt import adversarial_training as at
from scalable_awt import attacks
from scalable_awt import checkpoints as ckpt_lib
from scalable_awt import config_validation
from scalable_awt import data as data_lib
from scalable_awt import distribution
from scalable_awt import evaluation
from scalable_awt import masks as masks_lib
from scalable_awt import metrics as metrics_lib
from scalable_awt import models
from scalable_awt import search_phase

PyTree = Any

# Keys that may change between runs in one workdir (they do not change what
# is computed, or they only add work); any other change is refused.
RESUME_MUTABLE_KEYS = ("phases", "methods", "eval", "checkpoint",
                       "train.log_every_steps", "data.data_dir",
                       "data.source", "data.download")


# ====================================================================== search


@dataclasses.dataclass
class SearchContext:
  """What a mask function may use besides `(config, params, key)`.

  `workdir` is the method's own folder (`checkpoints/search/<method>/`) for a
  resumable search loop; `dataset` the loaded data; `mesh` the device mesh;
  `writer` the metric writer.
  """
  model: Any
  model_state: PyTree
  dataset: data_lib.Dataset
  mesh: Any
  workdir: str
  writer: Any


MaskFn = Callable[..., PyTree | None]


def dense_ticket(config, params, key, *, context):
  del config, params, key, context
  return None


def random_ticket(config, params, key, *, context):
  del context
  # One jitted computation, not dozens of eagerly compiled ops. The layer
  # densities follow search.mask_distribution, like the searched tickets'.
  return jax.jit(functools.partial(
      masks_lib.random_mask, density=float(config.search.density),
      distribution=config.search.mask_distribution))(key, params)


def magnitude_ticket(config, params, key, *, context):
  del key, context
  return jax.jit(functools.partial(
      masks_lib.magnitude_mask, density=float(config.search.density),
      distribution=config.search.mask_distribution))(params)


# The one place that maps a method name to its mask function.
MASK_FNS: dict[str, MaskFn] = {
    "dense": dense_ticket,
    "random": random_ticket,
    "magnitude": magnitude_ticket,
    "snip": search_phase.snip_ticket,
    "awt": search_phase.awt_ticket,
    "ntt": search_phase.ntt_ticket,
}


# ====================================================================== setup


def build_model(config, num_classes: int):
  m = config.model
  if m.name == "linear":
    from scalable_awt.gaussian_toy import LinearClassifier
    if num_classes != 2:
      raise ValueError("model.name='linear' is the two-class toy classifier.")
    return LinearClassifier()
  kwargs = {"mlp": dict(features=tuple(m.mlp_features)),
            "cnn": dict(conv_features=tuple(m.cnn_conv_features),
                        dense_features=int(m.cnn_dense_features)),
            "vgg16": dict(norm=m.vgg_norm,
                          classifier_features=tuple(m.vgg_classifier_features)),
            }[m.name]
  return models.create_model(m.name, num_classes=num_classes, **kwargs)


def keys_for(config) -> dict[str, jax.Array]:
  root = jax.random.PRNGKey(int(config.seed))
  return {name: jax.random.fold_in(root, i) for i, name in
          enumerate(("init", "search", "train", "eval"))}


def method_key(key: jax.Array, method: str) -> jax.Array:
  """A per-method key that does not depend on the order of `methods`."""
  return jax.random.fold_in(key, zlib.crc32(method.encode()) & 0x7FFFFFFF)


def attack_domain(config, dataset_domain):
  d = config.attack.domain
  if d == "auto":
    return tuple(dataset_domain) if dataset_domain else None
  return (0.0, 1.0) if d == "unit" else None


def _config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def _flatten(d: dict, prefix="") -> dict:
  out = {}
  for k, v in d.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, name + "."))
    else:
      out[name] = v
  return out


def check_resume_config(workdir: str, config) -> None:
  """Refuses to resume a workdir whose results-relevant config differs."""
  old = metrics_lib.read_json(os.path.join(workdir, "config.json"))
  if old is None:
    return
  new = _flatten(_config_dict(config))
  old = _flatten(old)
  # Keys the old run did not have come from a newer schema: allowed.
  added = sorted(set(new) - set(old))
  if added:
    logging.warning("config keys new since this workdir was created: %s",
                    ", ".join(added))
  changed = sorted(k for k in old if old.get(k) != new.get(k)
                   and not any(k == m or k.startswith(m + ".")
                               for m in RESUME_MUTABLE_KEYS))
  if changed:
    details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                        for k in changed)
    raise config_validation.ConfigError(
        f"workdir {workdir} holds a run with a different config ({details}). "
        "Use a new --workdir, or the same values to resume. Keys that may "
        f"change between runs: {', '.join(RESUME_MUTABLE_KEYS)}.")


class Status:
  """`status.json`: finished work per phase and method, wall time per phase."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "status.json")
    self.data = metrics_lib.read_json(self.path, {"done": {}, "wall_time_s": {}})

  def done(self, phase: str, method: str) -> bool:
    return method in self.data["done"].get(phase, {})

  def info(self, phase: str, method: str):
    return self.data["done"].get(phase, {}).get(method)

  def mark(self, phase: str, method: str, info=True) -> None:
    self.data["done"].setdefault(phase, {})[method] = info
    self.save()

  def add_time(self, phase: str, seconds: float) -> None:
    t = self.data["wall_time_s"]
    t[phase] = t.get(phase, 0.0) + float(seconds)
    self.save()

  def save(self) -> None:
    metrics_lib.write_json(self.path, self.data)


def initial_variables(config, model, dataset, workdir, mesh):
  """The dense initialisation, saved once and restored on every later run."""
  params, model_state = jax.jit(
      lambda key: models.init_model(model, key, (1,) + dataset.image_shape))(
          keys_for(config)["init"])
  init = {"params": params, "model_state": model_state}
  store = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints", "init"),
                               keep=1)
  with store:
    restored = store.restore(ckpt_lib.abstract_like(
        init, distribution.replicated(mesh)))
    if restored is None:
      init = distribution.replicate(init, mesh)
      store.save(0, init, {"phase": "init", "seed": int(config.seed)})
    else:
      init = restored[1]
  return init["params"], init["model_state"]


# ====================================================================== phases


def search_phase(config, workdir, *, model, params, model_state, dataset, mesh,
                 writer, status) -> dict[str, PyTree | None]:
  """One mask per method (None for dense); each saved once, then reused."""
  out = {}
  base_key = keys_for(config)["search"]
  for method in config.methods:
    out[method] = _search_one(config, workdir, method, model=model,
                              params=params, model_state=model_state,
                              dataset=dataset, mesh=mesh, writer=writer,
                              status=status, key=method_key(base_key, method))
  return out


def _mask_store(workdir, method):
  return ckpt_lib.Checkpoints(
      os.path.join(workdir, "checkpoints", "search", method, "mask"), keep=1)


def _search_one(config, workdir, method, *, model, params, model_state,
                dataset, mesh, writer, status, key):
  if status.done("search", method):
    return load_mask(workdir, method, params, mesh, status)
  context = SearchContext(
      model=model, model_state=model_state, dataset=dataset, mesh=mesh,
      workdir=os.path.join(workdir, "checkpoints", "search", method),
      writer=writer)
  start = time.time()
  mask = MASK_FNS[method](config, params, key, context=context)
  # Wall time of this (last) run of the search: the search cost that the
  # estimator comparison reports. A resumed search counts only its last part.
  search_wall_s = time.time() - start
  if mask is None:
    status.mark("search", method, {"dense": True, "density": 1.0})
    return None
  mask = distribution.replicate(distribution.to_host(mask), mesh)
  report = masks_lib.density_report(distribution.to_host(mask))
  with _mask_store(workdir, method) as store:
    store.save(0, {"mask": mask}, {"method": method,
                                   "density": report["density_prunable"]})
  status.mark("search", method, {"dense": False,
                                 "density": report["density_prunable"],
                                 "wall_s": search_wall_s})
  logging.info("search[%s]: density reached %.4f (target %.4f)", method,
               report["density_prunable"], config.search.density)
  return mask


def load_mask(workdir, method, params, mesh, status):
  info = status.info("search", method)
  if info is None:
    raise RuntimeError(
        f"No mask for method {method!r} in {workdir}: the search phase has not "
        "run for it. Add 'search' to config.phases.")
  if info.get("dense"):
    return None
  abstract = {"mask": ckpt_lib.abstract_like(params,
                                             distribution.replicated(mesh))}
  with _mask_store(workdir, method) as store:
    restored = store.restore(abstract)
  if restored is None:
    raise RuntimeError(f"Mask checkpoint of {method!r} missing in {workdir}; "
                       "delete status.json's search entry to recompute it.")
  return restored[1]["mask"]


def make_optimizer(config, total_steps):
  t = config.train
  return at.make_optimizer(
      name=t.optimizer, learning_rate=t.learning_rate, schedule=t.schedule,
      total_steps=max(total_steps, 1), warmup_steps=min(t.warmup_steps,
                                                        max(total_steps, 1)),
      weight_decay=t.weight_decay, momentum=t.momentum)


def state_to_tree(state: at.TrainState, rng) -> dict:
  tree = {"step": state.step, "params": state.params,
          "model_state": state.model_state, "opt_state": state.opt_state,
          "rng": rng}
  if state.mask is not None:
    tree["mask"] = state.mask
  return tree


def tree_to_state(tree: dict) -> tuple[at.TrainState, jax.Array]:
  state = at.TrainState(step=tree["step"], params=tree["params"],
                        model_state=tree["model_state"],
                        opt_state=tree["opt_state"], mask=tree.get("mask"))
  return state, tree["rng"]


def train_schedule(config, num_train: int) -> tuple[int, int]:
  spe = data_lib.steps_per_epoch(num_train, config.train.batch_size)
  return spe, spe * int(config.train.epochs)


def _train_store(workdir, method, config):
  return ckpt_lib.Checkpoints(
      os.path.join(workdir, "checkpoints", "train", method),
      keep=config.checkpoint.keep)


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


def train_phase(config, workdir, method, *, model, init_params,
                init_model_state, mask, dataset, mesh, writer, status):
  """Adversarially trains one ticket from the dense initialisation; resumable."""
  spe, total = train_schedule(config, len(dataset.train_labels))
  distribution.check_batch_size(config.train.batch_size, mesh)
  tx = make_optimizer(config, total)
  fresh = at.create_train_state(init_params, init_model_state, tx, mask)
  rng = keys_for(config)["train"]  # Same PGD starts for every method.
  rep = distribution.replicated(mesh)
  tree = distribution.replicate(state_to_tree(fresh, rng), mesh)
  meta = {"phase": "train", "method": method, "step": 0, "epoch": 0,
          "steps_per_epoch": spe, "total_steps": total, "sums": {},
          "count": 0, "history": []}
  store = _train_store(workdir, method, config)
  restored = store.restore(ckpt_lib.abstract_like(tree, rep))
  if restored is not None:
    step, tree, meta = restored
    if meta["steps_per_epoch"] != spe or meta["total_steps"] != total:
      store.close()
      raise RuntimeError(
          f"Checkpoint in {store.directory} was made for {meta['total_steps']} "
          f"steps of {meta['steps_per_epoch']} per epoch, this run has {total} "
          f"of {spe}; use a new --workdir.")
    logging.info("train[%s]: resuming at step %d/%d", method, step, total)
  state, rng = tree_to_state(tree)
  step = int(meta["step"])
  if step >= total:
    store.close()
    status.mark("train", method, {"steps": total})
    return state, meta["history"]

  a = config.attack
  domain = attack_domain(config, dataset.domain)
  train_step = at.make_train_step(
      model, tx, epsilon=a.epsilon, step_size=a.train_step_size,
      num_steps=a.train_steps, norm=a.norm, domain=domain,
      random_start=a.random_start,
      # A ramp longer than the run (e.g. train.epochs overridden down) ends
      # with the run, so the last steps still train at the full epsilon.
      epsilon_warmup_steps=min(int(config.train.epsilon_warmup_epochs * spe), total))

  def step_fn(state, batch, base_key):
    return train_step(state, batch, jax.random.fold_in(base_key, state.step))

  step_fn = distribution.data_parallel(step_fn, mesh)
  curve_fn = make_curve_fn(model, epsilon=a.epsilon,
                           step_size=2.5 * a.epsilon / config.train.curve_pgd_steps,
                           num_steps=config.train.curve_pgd_steps, norm=a.norm,
                           domain=domain)
  n_curve = min(config.train.curve_examples, len(dataset.test_labels))
  curve_x = data_lib.to_float(dataset.test_images[:n_curve])
  curve_y = dataset.test_labels[:n_curve]
  curve_key = method_key(keys_for(config)["eval"], "curve")

  batches = data_lib.Batches(dataset.train_images, dataset.train_labels,
                             config.train.batch_size, seed=config.seed,
                             start_step=step,
                             sharding=distribution.batch_sharded(mesh))
  progress = metrics_lib.Progress(total, writer=writer, name=f"train[{method}]",
                                  first_step=step)
  sums, count = dict(meta["sums"]), int(meta["count"])
  history = list(meta["history"])
  every = config.checkpoint.every_steps
  try:
    while step < total:
      state, m = step_fn(state, batches.get(step), rng)
      m = {k: float(v) for k, v in jax.device_get(m).items()}
      if not math.isfinite(m["loss"]):
        raise FloatingPointError(
            f"train[{method}]: non-finite loss {m['loss']} at step {step + 1} "
            f"(last checkpoint at or before step {step - step % every}); lower "
            "train.learning_rate or check the data.")
      step += 1
      for k, v in m.items():
        sums[k] = sums.get(k, 0.0) + v
      count += 1
      if step % config.train.log_every_steps == 0:
        writer.write_scalars(step, {f"{method}/train/{k}": v
                                    for k, v in m.items()})
      progress(step, f"loss {m['loss']:.3f}")
      if step % spe == 0:
        epoch = step // spe
        row = {"epoch": epoch, "step": step,
               **{f"train_{k}": v / max(count, 1) for k, v in sums.items()}}
        ce = config.train.curve_every_epochs
        if ce and (epoch % ce == 0 or step == total):
          params_h = distribution.to_host(state.params)
          ms_h = distribution.to_host(state.model_state)
          nat, rob = curve_fn(params_h, ms_h, curve_x, curve_y,
                              jax.random.fold_in(curve_key, epoch))
          row["test_natural_accuracy"] = float(nat) / n_curve
          row["test_robust_accuracy"] = float(rob) / n_curve
        history.append(row)
        writer.write_scalars(step, {f"{method}/epoch/{k}": v for k, v in
                                    row.items() if v is not None and
                                    k not in ("epoch", "step")})
        writer.flush()
        sums, count = {}, 0
      if step % every == 0 or step == total:
        # Deep copies: the save is asynchronous and `sums`/`history` keep
        # changing while it runs.
        meta = copy.deepcopy({**meta, "step": step, "epoch": step // spe,
                              "sums": sums, "count": count,
                              "history": history})
        store.save(step, state_to_tree(state, rng), meta)
  finally:
    store.close()
  status.mark("train", method, {"steps": total})
  return state, history


def load_trained_state(config, workdir, method, *, model, init_params,
                       init_model_state, mask, num_train, mesh):
  _, total = train_schedule(config, num_train)
  tx = make_optimizer(config, total)
  fresh = at.create_train_state(init_params, init_model_state, tx, mask)
  tree = state_to_tree(fresh, keys_for(config)["train"])
  abstract = ckpt_lib.abstract_like(tree, distribution.replicated(mesh))
  with _train_store(workdir, method, config) as store:
    restored = store.restore(abstract)
  if restored is None:
    if total == 0:
      return fresh, []
    raise RuntimeError(
        f"No trained model {method!r} in {workdir}: run the train phase "
        "(add 'train' to config.phases).")
  _, tree, meta = restored
  if meta["step"] < total:
    raise RuntimeError(
        f"Training of {method!r} in {workdir} stopped at step {meta['step']} of "
        f"{total}; run the train phase to finish it.")
  return tree_to_state(tree)[0], meta["history"]


def evaluate_phase(config, workdir, method, state, *, model, dataset, status):
  """Natural and robust accuracy of one trained ticket (cached in eval/)."""
  path = os.path.join(workdir, "eval", f"{method}.json")
  fingerprint = json.dumps({"eval": _config_dict(config)["eval"],
                            "attack": _config_dict(config)["attack"],
                            "step": int(distribution.to_host(state.step))},
                           sort_keys=True)
  cached = metrics_lib.read_json(path)
  if cached is not None and cached.get("fingerprint") == fingerprint:
    return cached["result"]
  e = config.eval
  n = len(dataset.test_labels) if e.num_examples < 0 else min(
      e.num_examples, len(dataset.test_labels))
  mesh = distribution.local_mesh()
  params = jax.device_put(distribution.to_host(state.params),
                          distribution.replicated(mesh))
  apply_fn = distribution.shard_inputs_fn(
      models.make_apply_fn(model, distribution.to_host(state.model_state)), mesh)
  batch = e.batch_size - e.batch_size % mesh.devices.size or e.batch_size
  result = evaluation.evaluate(
      apply_fn, params, data_lib.to_float(dataset.test_images[:n]),
      dataset.test_labels[:n], key=method_key(keys_for(config)["eval"], method),
      epsilon=config.attack.epsilon, attacks=tuple(e.attacks),
      pgd_steps=e.pgd_steps, pgd_restarts=e.pgd_restarts,
      step_size=None if e.step_size < 0 else e.step_size,
      norm=config.attack.norm, domain=attack_domain(config, dataset.domain),
      batch_size=batch, num_classes=dataset.num_classes,
      apgd_steps=e.apgd_steps)
  metrics_lib.write_json(path, {"fingerprint": fingerprint, "result": result})
  status.mark("evaluate", method, True)
  return result


# ====================================================================== run


def _finished_results(config, workdir, status) -> dict | None:
  """results.json if this exact config already ran every phase, else None."""
  results = metrics_lib.read_json(os.path.join(workdir, "results.json"))
  if results is None or results.get("config") != _config_dict(config):
    return None
  for method in config.methods:
    for phase in config.phases:
      if not status.done(phase, method):
        return None
    if "evaluate" in config.phases and method not in results.get("models", {}):
      return None
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the phases in `config.phases` in `workdir`; returns results.json."""
  config_validation.validate(config, implemented_methods=tuple(MASK_FNS))
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  check_resume_config(workdir, config)
  if not os.path.exists(os.path.join(workdir, "config.json")):
    metrics_lib.write_json(os.path.join(workdir, "config.json"),
                           _config_dict(config))
  metrics_lib.write_json(os.path.join(workdir, "config.last.json"),
                         _config_dict(config))
  status = Status(workdir)
  finished = _finished_results(config, workdir, status)
  if finished is not None:
    logging.info("everything in %s is done already; nothing to run", workdir)
    return finished
  t0 = time.time()
  dataset = data_lib.load(config.data, seed=config.seed)
  metrics_lib.write_json(os.path.join(workdir, "dataset.json"), dataset.info())
  logging.info("data: %s", dataset.info())
  mesh = distribution.make_mesh()
  model = build_model(config, dataset.num_classes)
  params, model_state = initial_variables(config, model, dataset, workdir, mesh)
  writer = metrics_lib.create_writer(workdir)
  status.add_time("setup", time.time() - t0)

  phases = tuple(config.phases)
  t0 = time.time()
  if "search" in phases:
    tickets = search_phase(config, workdir, model=model, params=params,
                           model_state=model_state, dataset=dataset, mesh=mesh,
                           writer=writer, status=status)
    status.add_time("search", time.time() - t0)
  else:
    tickets = {m: load_mask(workdir, m, params, mesh, status)
               for m in config.methods}

  states, histories = {}, {}
  for method in config.methods:
    t0 = time.time()
    if "train" in phases:
      states[method], histories[method] = train_phase(
          config, workdir, method, model=model, init_params=params,
          init_model_state=model_state, mask=tickets[method], dataset=dataset,
          mesh=mesh, writer=writer, status=status)
      status.add_time("train", time.time() - t0)
    elif "evaluate" in phases:
      states[method], histories[method] = load_trained_state(
          config, workdir, method, model=model, init_params=params,
          init_model_state=model_state, mask=tickets[method],
          num_train=len(dataset.train_labels), mesh=mesh)

  results_path = os.path.join(workdir, "results.json")
  results = metrics_lib.read_json(results_path, {"models": {}})
  results["config"] = _config_dict(config)
  results["dataset"] = dataset.info()
  results["devices"] = {"count": jax.device_count(),
                        "platform": jax.devices()[0].platform,
                        "processes": jax.process_count()}
  if "evaluate" in phases:
    for method in config.methods:
      t0 = time.time()
      res = evaluate_phase(config, workdir, method, states[method], model=model,
                           dataset=dataset, status=status)
      mask = tickets[method]
      report = (masks_lib.density_report(distribution.to_host(mask))
                if mask is not None else
                masks_lib.density_report(masks_lib.ones_like(
                    distribution.to_host(params))))
      results["models"][method] = {
          "density": report["density_prunable"],
          "density_all_parameters": report["density_all"],
          "density_per_layer": report["per_layer"],
          "natural_accuracy": res["natural_accuracy"],
          "robust_accuracy": dict(res["robust_accuracy_per_attack"]),
          "robust_accuracy_all_attacks": res["robust_accuracy"],
          "epsilon": res["epsilon"], "norm": res["norm"],
          "num_examples": res["num_examples"],
          "per_class_accuracy": res["per_class_accuracy"],
          "search_wall_s": (status.info("search", method) or {}).get("wall_s"),
          "curve": histories.get(method, []),
      }
      writer.write_scalars(int(distribution.to_host(states[method].step)), {
          f"{method}/eval/natural_accuracy": res["natural_accuracy"],
          **{f"{method}/eval/robust_accuracy/{k}": v for k, v in
             res["robust_accuracy_per_attack"].items()}})
      status.add_time("evaluate", time.time() - t0)
  results["target_density"] = config.search.density
  results["wall_time_s"] = dict(status.data["wall_time_s"])
  results["plots"] = {}
  plot = metrics_lib.plot_curves(
      os.path.join(workdir, "plots", "accuracy.png"),
      {m: h for m, h in histories.items() if h},
      title=f"{config.model.name} on {config.data.name}, eps={config.attack.epsilon:.4g}")
  if plot:
    results["plots"]["accuracy"] = plot
  metrics_lib.write_json(results_path, results)
  writer.flush()
  return results


# ====================================================================== loading


def load_trained(workdir: str, model_name: str | None = None):
  """`(apply_fn, params)` of a trained ticket in `workdir` (masks applied).

  `apply_fn(params, x)` takes inputs in [0, 1] (the data's domain) and returns
  logits, in inference mode. `model_name` is a method ("dense", "random",
  ...); default: the first of the run's `config.methods` that finished
  training.
  """
  workdir = os.path.abspath(workdir)
  raw = metrics_lib.read_json(os.path.join(workdir, "config.json"))
  info = metrics_lib.read_json(os.path.join(workdir, "dataset.json"))
  if raw is None or info is None:
    raise FileNotFoundError(f"{workdir} holds no run (config.json/dataset.json "
                            "missing).")
  config = ml_collections.ConfigDict(raw)
  status = Status(workdir)
  trained = [m for m in config.methods if status.done("train", m)]
  if model_name is None:
    if not trained:
      raise RuntimeError(f"No finished training in {workdir}.")
    model_name = trained[0]
  elif model_name not in config.methods:
    raise ValueError(f"Unknown model {model_name!r}; {workdir} has "
                     f"{list(config.methods)}.")
  model = build_model(config, info["num_classes"])
  params, model_state = models.init_model(
      model, keys_for(config)["init"], [1] + list(info["image_shape"]))
  mesh = distribution.make_mesh(jax.devices()[:1])
  mask = load_mask(workdir, model_name, params, mesh, status)
  state, _ = load_trained_state(config, workdir, model_name, model=model,
                                init_params=params, init_model_state=model_state,
                                mask=mask, num_train=info["num_train"], mesh=mesh)
  params = masks_lib.apply_mask(state.params, state.mask)
  return models.make_apply_fn(model, state.model_state), params
