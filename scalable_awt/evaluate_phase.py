"""The evaluate phase: each trained ticket evaluated once, the result cached.

The test split gets the whole attack suite of `config.eval`; the validation
split (held out of training by `data.validation_examples`), when
`eval.validation` is on and the split is not empty, gets natural accuracy and
PGD only: it is what recipe choices are made on, cheaply and often, while the
test set is evaluated once per final model. A recipe study sets
`eval.split = "validation"`: the whole suite then runs on the validation split,
which is what the results report, and the test set is not touched. Results are
cached in
`eval/<method>.json` under a fingerprint of the eval and attack settings and
the trained step, so a rerun with the same model and settings reads them back.
"""

from __future__ import annotations

import inspect
import json
import os

import jax
import numpy as np

from scalable_awt import config_validation
from scalable_awt import data as data_lib
from scalable_awt import distribution, evaluation, models, rng
from scalable_awt import metrics as metrics_lib


def _evaluate_split(settings, model, state, images, labels, *, key, attacks,
                    dataset):
  e, a = settings.eval, settings.attack
  n = len(labels) if e.num_examples is None else min(e.num_examples, len(labels))
  mesh = distribution.local_mesh()
  params = jax.device_put(distribution.to_host(state.params),
                          distribution.replicated(mesh))
  apply_fn = distribution.shard_inputs_fn(
      models.make_apply_fn(model, distribution.to_host(state.model_state)), mesh)
  batch = e.batch_size - e.batch_size % mesh.devices.size or e.batch_size
  options = dict(apgd_steps=e.apgd_steps, apgd_t_targets=e.apgd_t_targets,
                 square_queries=e.square_queries)
  # Options that this version of `evaluation.evaluate` knows (APGD-T and
  # Square arrive with their attacks).
  known = inspect.signature(evaluation.evaluate).parameters
  options = {k: v for k, v in options.items() if k in known}
  return evaluation.evaluate(
      apply_fn, params, data_lib.to_float(images[:n]), labels[:n], key=key,
      epsilon=a.epsilon, attacks=attacks, pgd_steps=e.pgd_steps,
      pgd_restarts=e.pgd_restarts, step_size=e.step_size, norm=a.norm,
      domain=a.box(dataset.domain), batch_size=batch,
      num_classes=dataset.num_classes, **options)


def validation_split(dataset) -> tuple[np.ndarray, np.ndarray] | None:
  """`(images, labels)` of the held-out validation split, or None if empty."""
  images = getattr(dataset, "validation_images", None)
  labels = getattr(dataset, "validation_labels", None)
  if images is None or labels is None or len(labels) == 0:
    return None
  return images, labels


def check_split(settings, dataset) -> None:
  """Refuses `eval.split = "validation"` on data without a held-out split.

  Called once the data is loaded, before any search or training is spent.
  """
  if settings.eval.split == "validation" and validation_split(dataset) is None:
    raise config_validation.ConfigError(
        f"eval.split='validation' but {settings.data.name} has no validation split here "
        f"(data.validation_examples={settings.data.validation_examples}); hold some "
        "training examples out with data.validation_examples=N")


def evaluate_one(settings, workdir, method, state, *, model, dataset, status
                 ) -> dict:
  """`{"split", "reported", "validation"}`, cached.

  `reported` is the attack suite's result on `eval.split` (what the results
  row holds); `validation` the natural + PGD check of the held-out split
  beside a test evaluation (None when there is none, or when the suite itself
  ran on the validation split).
  """
  split = settings.eval.split
  check_split(settings, dataset)
  # One cache per split: a recipe study never replaces the test evaluation.
  path = os.path.join(workdir, "eval",
                      f"{method}.json" if split == "test" else f"{method}.{split}.json")
  held_out = validation_split(dataset)
  if not settings.eval.validation and split == "test":
    held_out = None
  fingerprint = json.dumps({
      "eval": settings.config_json["eval"],
      "attack": settings.config_json["attack"],
      "num_validation": 0 if held_out is None else len(held_out[1]),
      "step": int(distribution.to_host(state.step))}, sort_keys=True)
  cached = metrics_lib.read_json(path)
  if cached is not None and cached.get("fingerprint") == fingerprint:
    return {"split": cached.get("split", "test"), "reported": cached["result"],
            "validation": cached.get("validation")}
  key = rng.method_key(rng.phase_keys(settings.seed)["eval"], method)
  validation = None
  if split == "validation":
    # The suite on the held-out split, with the key the validation check uses.
    reported = _evaluate_split(settings, model, state, *held_out,
                               key=jax.random.fold_in(key, 1),
                               attacks=settings.eval.attacks, dataset=dataset)
  else:
    reported = _evaluate_split(settings, model, state, dataset.test_images,
                               dataset.test_labels, key=key,
                               attacks=settings.eval.attacks, dataset=dataset)
    if held_out is not None:
      validation = _evaluate_split(
          settings, model, state, *held_out, key=jax.random.fold_in(key, 1),
          attacks=("pgd",), dataset=dataset)
  metrics_lib.write_json(path, {"fingerprint": fingerprint, "split": split,
                                "result": reported, "validation": validation})
  status.mark("evaluate", method, True)
  return {"split": split, "reported": reported, "validation": validation}
