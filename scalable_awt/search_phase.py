"""The search phase: one mask per method, each computed once and stored.

`search_all` runs `tickets.MASK_FNS[method]` for every method from the same
dense initialisation and saves the mask in `checkpoints/search/<method>/mask`
(status.json records that it is done, its density and the search's wall
time); `load_mask` reads it back in later runs and phases.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from scalable_awt import checkpoints as ckpt_lib
from scalable_awt import distribution, masks, rng, tickets
from scalable_awt import settings as settings_lib

PyTree = Any


def search_settings(config, *, epsilon: float, total_steps: int, domain):
  """`ticket_search.SearchSettings` of a config's search at `epsilon`."""
  settings = settings_lib.of(config)
  return settings.search.for_search(
      epsilon=epsilon, kernel_weight=settings.search.kernel_weight,
      total_steps=total_steps, norm=settings.attack.norm, domain=domain)


def _mask_store(workdir: str, method: str) -> ckpt_lib.Checkpoints:
  return ckpt_lib.Checkpoints(
      os.path.join(workdir, "checkpoints", "search", method, "mask"), keep=1)


def search_one(settings, workdir, method, *, params, key, model, model_state,
               dataset, mesh, writer, status, deadline=None):
  """The mask of `method` (None for dense): stored, or searched and stored."""
  if status.done("search", method):
    return load_mask(workdir, method, params, mesh, status)
  context = tickets.SearchContext(
      model=model, model_state=model_state, dataset=dataset, mesh=mesh,
      workdir=os.path.join(workdir, "checkpoints", "search", method),
      writer=writer, run_dir=workdir, deadline=deadline)
  start = time.time()
  mask = tickets.MASK_FNS[method](settings, params, key, context=context)
  # Wall time of this (last) run of the search: the search cost that the
  # estimator comparison reports. A resumed search counts only its last part.
  search_wall_s = time.time() - start
  if mask is None:
    status.mark("search", method, {"dense": True, "density": 1.0})
    return None
  mask = distribution.replicate(distribution.to_host(mask), mesh)
  report = masks.density_report(distribution.to_host(mask))
  with _mask_store(workdir, method) as store:
    store.save(0, {"mask": mask}, {"method": method,
                                   "density": report["density_prunable"]})
  status.mark("search", method, {"dense": False,
                                 "density": report["density_prunable"],
                                 "wall_s": search_wall_s,
                                 "steps": context.steps})
  logging.info("search[%s]: density reached %.4f (target %.4f)", method,
               report["density_prunable"], settings.search.density)
  return mask


def search_all(settings, workdir, *, params, budget=None,
               **kwargs) -> dict[str, PyTree | None]:
  """One mask per method of `settings.methods` (None for dense).

  With a `budget.Budget`, the searches share its search time evenly.
  """
  base_key = rng.phase_keys(settings.seed)["search"]
  masks_ = {}
  for method in settings.methods:
    pending = [m for m in settings.methods if m in tickets.SEARCHED
               and m not in masks_]
    deadline = (budget.deadline("search", len(pending))
                if budget is not None and method in pending else None)
    masks_[method] = search_one(
        settings, workdir, method, params=params, deadline=deadline,
        key=rng.method_key(base_key, tickets.KEY_OF.get(method, method)), **kwargs)
  return masks_


def load_mask(workdir, method, params, mesh, status):
  """The stored mask of `method` (None for dense); raises if never searched."""
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
