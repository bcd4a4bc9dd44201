"""The run: search -> train -> evaluate, each phase resumable.

`train_and_evaluate(config, workdir)` is the whole run; `main.py` only parses
flags and calls it. The pieces, one concept per module:

* `settings`: the config resolved and validated once into settings objects.
* `workdir`: config.json, the resume guard, status.json.
* `rng`: the fold_in scheme (phase, method, step) behind exact resumes.
* `tickets`: the method registry `MASK_FNS` (dense, random, magnitude, snip,
  awt, awt_no_kernel, ntt); `search_phase` stores one mask per method.
* `loop`: the one resumable checkpointed loop (search and training).
* `train_phase`: adversarial training of each ticket from the same init.
* `evaluate_phase` and `results`: cached evaluation, results.json rows.

Workdir layout (everything a run needs to resume):

    config.json           resolved config (the first run's; later runs check
                          that results-relevant keys did not change)
    dataset.json          what was loaded (shapes, classes, source)
    status.json           finished phases per method, wall time per phase
    checkpoints/init/     the dense initialisation (params, model state)
    checkpoints/search/<method>/   the method's mask (+ its own search state)
    checkpoints/train/<method>/    TrainState, RNG key, data position, history
    eval/<method>.json    evaluation of the trained ticket (test, validation)
    results.json, plots/accuracy.png, TensorBoard event files (or metrics.jsonl)

Resume priority: the newest readable checkpoint in the workdir, else a fresh
start. The batch of step `s` is a function of `(seed, s)` and every key a
`fold_in` of the seed, so a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import ml_collections

from scalable_awt import budget as budget_lib
from scalable_awt import checkpoints as ckpt_lib
from scalable_awt import data as data_lib
from scalable_awt import distribution, evaluate_phase, masks, models
from scalable_awt import metrics as metrics_lib
from scalable_awt import results as results_lib
from scalable_awt import rng, search_phase, tickets, train_phase
from scalable_awt import settings as settings_lib
from scalable_awt import workdir as workdir_lib

# Re-exported for callers of the old single-module runner (main.py, tests).
MASK_FNS = tickets.MASK_FNS
Status = workdir_lib.Status


def initial_variables(settings, model, dataset, workdir, mesh):
  """The dense initialisation, saved once and restored on every later run."""
  params, model_state = jax.jit(
      lambda key: models.init_model(model, key, (1,) + dataset.image_shape))(
          rng.phase_keys(settings.seed)["init"])
  init = {"params": params, "model_state": model_state}
  store = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints", "init"),
                               keep=1)
  with store:
    restored = store.restore(ckpt_lib.abstract_like(
        init, distribution.replicated(mesh)))
    if restored is None:
      init = distribution.replicate(init, mesh)
      store.save(0, init, {"phase": "init", "seed": settings.seed})
    else:
      init = restored[1]
  return init["params"], init["model_state"]


def _train_all(settings, workdir, tickets_, *, status, budget, **kwargs):
  """`(states, histories)` per method: trained now, or loaded for evaluation."""
  states, histories = {}, {}
  for i, method in enumerate(settings.methods):
    t0 = time.time()
    if "train" in settings.phases:
      states[method], histories[method] = train_phase.train_one(
          settings, workdir, method, mask=tickets_[method], status=status,
          deadline=budget.deadline("train", len(settings.methods) - i),
          **kwargs)
      status.add_time("train", time.time() - t0)
    elif "evaluate" in settings.phases:
      states[method], histories[method] = train_phase.load_trained_state(
          settings, workdir, method, init_params=kwargs["init_params"],
          init_model_state=kwargs["init_model_state"], mask=tickets_[method],
          num_train=len(kwargs["dataset"].train_labels), mesh=kwargs["mesh"])
  return states, histories


def _evaluate_all(settings, workdir, results, *, states, histories, tickets_,
                  params, model, dataset, writer, status):
  for method in settings.methods:
    t0 = time.time()
    evaluation = evaluate_phase.evaluate_one(
        settings, workdir, method, states[method], model=model,
        dataset=dataset, status=status)
    results["models"][method] = results_lib.model_row(
        settings, evaluation, mask=tickets_[method], params=params,
        dataset_domain=dataset.domain,
        search_info=status.info("search", method),
        train_info=status.info("train", method),
        curve=histories.get(method, []))
    reported = evaluation["reported"]
    # A recipe study's numbers get their own tag, never mistaken for test ones.
    tag = "eval" if evaluation["split"] == "test" else "eval_validation"
    writer.write_scalars(int(distribution.to_host(states[method].step)), {
        f"{method}/{tag}/natural_accuracy": reported["natural_accuracy"],
        **{f"{method}/{tag}/robust_accuracy/{k}": v for k, v in
           reported["robust_accuracy_per_attack"].items()}})
    status.add_time("evaluate", time.time() - t0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the phases in `config.phases` in `workdir`; returns results.json."""
  settings = settings_lib.resolve(config)
  budget = budget_lib.Budget(settings.time_budget_s)
  workdir = workdir_lib.prepare(workdir, settings.config_json)
  status = workdir_lib.Status(workdir)
  finished = results_lib.finished(workdir, settings, status)
  if finished is not None:
    logging.info("everything in %s is done already; nothing to run", workdir)
    return finished
  t0 = time.time()
  dataset = data_lib.load(settings.data, seed=settings.seed)
  metrics_lib.write_json(os.path.join(workdir, "dataset.json"), dataset.info())
  if "evaluate" in settings.phases:
    evaluate_phase.check_split(settings, dataset)
  logging.info("data: %s", dataset.info())
  mesh = distribution.make_mesh()
  model = settings.model.build(dataset.num_classes)
  params, model_state = initial_variables(settings, model, dataset, workdir, mesh)
  writer = metrics_lib.create_writer(workdir)
  status.add_time("setup", time.time() - t0)

  t0 = time.time()
  if "search" in settings.phases:
    tickets_ = search_phase.search_all(
        settings, workdir, params=params, model=model, model_state=model_state,
        dataset=dataset, mesh=mesh, writer=writer, status=status, budget=budget)
    status.add_time("search", time.time() - t0)
  else:
    tickets_ = {m: search_phase.load_mask(workdir, m, params, mesh, status)
                for m in settings.methods}
  states, histories = _train_all(
      settings, workdir, tickets_, status=status, budget=budget, model=model,
      init_params=params, init_model_state=model_state, dataset=dataset,
      mesh=mesh, writer=writer)
  results = results_lib.start(workdir, settings, dataset.info())
  if "evaluate" in settings.phases:
    _evaluate_all(settings, workdir, results, states=states,
                  histories=histories, tickets_=tickets_, params=params,
                  model=model, dataset=dataset, writer=writer, status=status)
  results = results_lib.finish(workdir, settings, results,
                               wall_time_s=status.data["wall_time_s"],
                               histories=histories)
  writer.flush()
  return results


def default_model(methods, trained) -> str | None:
  """The model `load_trained` returns by default: the ticket, AWT first.

  The first finished one of "awt", then the other searched tickets, then
  the other masked baselines, in the run's method order; dense last.
  """
  order = ([m for m in tickets.SEARCHED if m in methods]
           + [m for m in methods if m not in tickets.SEARCHED and m != "dense"]
           + [m for m in methods if m == "dense"])
  return next((m for m in order if m in trained), None)


def load_trained(workdir: str, model_name: str | None = None):
  """`(apply_fn, params)` of a trained ticket in `workdir` (masks applied).

  `apply_fn(params, x)` takes inputs in [0, 1] (the data's domain) and returns
  logits, in inference mode. `model_name` is a method ("awt", "dense",
  "random", ...); default: the AWT ticket, else another finished ticket
  (`default_model`).
  """
  workdir = os.path.abspath(workdir)
  raw = metrics_lib.read_json(os.path.join(workdir, "config.json"))
  info = metrics_lib.read_json(os.path.join(workdir, "dataset.json"))
  if raw is None or info is None:
    raise FileNotFoundError(f"{workdir} holds no run (config.json/dataset.json "
                            "missing).")
  settings = settings_lib.from_saved(raw)
  status = workdir_lib.Status(workdir)
  trained = [m for m in settings.methods if status.done("train", m)]
  if model_name is None:
    model_name = default_model(settings.methods, trained)
    if model_name is None:
      raise RuntimeError(f"No finished training in {workdir}; its methods are "
                         f"{list(settings.methods)}.")
  elif model_name not in trained:
    raise ValueError(
        f"No trained model {model_name!r} in {workdir}; available: {trained} "
        f"(the run's methods: {list(settings.methods)}).")
  model = settings.model.build(info["num_classes"])
  params, model_state = models.init_model(
      model, rng.phase_keys(settings.seed)["init"], [1] + list(info["image_shape"]))
  mesh = distribution.make_mesh(jax.devices()[:1])
  mask = search_phase.load_mask(workdir, model_name, params, mesh, status)
  state, _ = train_phase.load_trained_state(
      settings, workdir, model_name, init_params=params,
      init_model_state=model_state, mask=mask, num_train=info["num_train"],
      mesh=mesh)
  params = masks.apply_mask(state.params, state.mask)
  return models.make_apply_fn(model, state.model_state), params
