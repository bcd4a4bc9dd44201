"""The one resumable, checkpointed step loop that every phase runs.

A phase (the ticket search, adversarial training) describes itself as a
`Loop`: a jitted `step_fn(state, batch) -> (state, metrics)`, the batch of
each step, how its state becomes a checkpoint pytree, and a host-side
`on_metrics` hook for logs, curves and history. `restore` picks up the
newest readable checkpoint (resume priority: checkpoint in the workdir, else
the fresh state); `run` then

* steps from the restored step to `total_steps`,
* reads the metrics to the host every `metrics_every` steps, stops with
  `FloatingPointError` (naming the step and the last checkpoint) on a
  non-finite loss, and updates the one progress line,
* saves every `save_every` steps and at the end (state + JSON `meta`),
* on `KeyboardInterrupt` (Ctrl-C, or `interrupts.Preempted` raised by the
  SIGTERM handler) saves the last completed step and re-raises, so the same
  command resumes there. A step is computed and bookkept on the side
  (`on_metrics` gets a copy of `meta`) and committed in one statement, so
  the interrupt always finds a consistent `(step, state, meta)`.

`meta` is the phase's JSON-able bookkeeping (history, accumulators); the loop
keeps `meta["step"]` and `on_metrics` may update the rest in place (in the
copy it is given). The step
function gets no key: phases fold the step into their key inside `step_fn`,
so step `s` is a function of `(seed, s)` and a resumed run repeats the
uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import jax

from scalable_awt import checkpoints as ckpt_lib
from scalable_awt import interrupts
from scalable_awt import metrics as metrics_lib

PyTree = Any


@dataclasses.dataclass
class Loop:
  """One phase's loop; see the module docstring."""
  name: str  # E.g. "train[random]": progress line and error messages.
  store: ckpt_lib.Checkpoints
  total_steps: int
  save_every: int
  step_fn: Callable[[PyTree, dict], tuple[PyTree, dict]]
  get_batch: Callable[[int], dict]
  to_tree: Callable[[PyTree], PyTree] = lambda state: state
  # `on_metrics(step, values, state, meta) -> progress text`, on the host.
  on_metrics: Callable[[int, dict, PyTree, dict], str] | None = None
  metrics_every: int = 1
  # Read them at steps `metrics_offset + n * metrics_every` instead (e.g. the
  # steps of a search that compute its kernel term every N steps).
  metrics_offset: int = 0
  writer: Any = None
  hint: str = ""  # What to change after a non-finite loss.
  # `time.time()` by which the loop stops early (`budget.Budget`); None = never.
  deadline: float | None = None


def restore(store: ckpt_lib.Checkpoints, fresh_tree: PyTree, fresh_meta: dict,
            *, sharding=None, must_match: tuple[str, ...] = ("total_steps",),
            name: str = "") -> tuple[PyTree, dict]:
  """`(tree, meta)` of the newest readable checkpoint, else the fresh ones.

  `must_match` names meta entries (e.g. the schedule's length) that the
  checkpoint must share with `fresh_meta`; a mismatch closes `store` and
  raises, since resuming would silently change the run.
  """
  restored = store.restore(ckpt_lib.abstract_like(fresh_tree, sharding))
  if restored is None:
    return fresh_tree, dict(fresh_meta, step=0)
  _, tree, meta = restored
  for key in must_match:
    if meta.get(key) != fresh_meta.get(key):
      store.close()
      raise RuntimeError(
          f"The checkpoint in {store.directory} was made with {key}="
          f"{meta.get(key)}; this run has {fresh_meta.get(key)}. Use a new "
          "--workdir (or the same settings to resume).")
  logging.info("%s: resuming at step %d/%d", name, meta["step"],
               fresh_meta.get("total_steps", -1))
  return tree, meta


def _save(loop: Loop, step: int, state: PyTree, meta: dict) -> None:
  # A deep copy: the save is asynchronous and `meta` keeps changing.
  loop.store.save(step, loop.to_tree(state), copy.deepcopy(dict(meta, step=step)))


def _host_metrics(loop: Loop, step: int, metrics: dict) -> dict:
  values = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if not math.isfinite(values.get("loss", 0.0)):
    last = loop.store.latest_step()
    raise FloatingPointError(
        f"{loop.name}: non-finite loss {values['loss']} at step {step} (last "
        f"checkpoint: step {last if last is not None else 'none'}). {loop.hint}")
  return values


def _reads_metrics(loop: Loop, step: int) -> bool:
  """Whether the step just finished (`step` steps done) reads its metrics."""
  return step == loop.total_steps or (step - loop.metrics_offset) % loop.metrics_every == 0


def _advance(loop: Loop, step: int, state: PyTree, meta: dict, batch: dict):
  """Step `step` -> `step + 1` without touching the committed state or meta.

  Returns `(state, meta, progress text)` of the next step; `on_metrics`
  updates a copy of `meta`, so an interrupt anywhere in here leaves the
  current step's state and meta consistent (and saveable).
  """
  state, metrics = loop.step_fn(state, batch)
  step += 1
  if not _reads_metrics(loop, step):
    return state, dict(meta, step=step), ""
  values = _host_metrics(loop, step, metrics)
  meta = copy.deepcopy(dict(meta, step=step))
  text = loop.on_metrics(step, values, state, meta) if loop.on_metrics else ""
  return state, meta, text or ""


def run(loop: Loop, state: PyTree, meta: dict) -> tuple[PyTree, dict]:
  """Runs `loop` from `meta["step"]` to the end; returns `(state, meta)`.

  Closes `loop.store` (waiting for pending saves) however it ends.
  """
  step = int(meta.get("step", 0))
  # A run cut short by its time budget and resumed goes on to the end.
  meta = {k: v for k, v in meta.items() if k != "truncated"}
  meta["step"] = step
  progress = metrics_lib.Progress(loop.total_steps, writer=loop.writer,
                                  name=loop.name, first_step=step)
  try:
    while step < loop.total_steps:
      if loop.deadline is not None and time.time() >= loop.deadline:
        # Out of time (config.time_budget_s): keep what was reached.
        meta = dict(meta, truncated=True)
        _save(loop, step, state, meta)
        progress(step, "stopped: time budget spent")
        break
      new_state, new_meta, text = _advance(loop, step, state, meta,
                                           loop.get_batch(step))
      # The commit: one statement, so `(step, state, meta)` always agree.
      step, state, meta = step + 1, new_state, new_meta
      if text or _reads_metrics(loop, step):
        progress(step, text)
      if step % loop.save_every == 0 or step == loop.total_steps:
        _save(loop, step, state, meta)
  except KeyboardInterrupt:
    latest = loop.store.latest_step()
    if step > 0 and (latest is None or step > latest):
      logging.warning("%s: interrupted; saving step %d", loop.name, step)
      try:
        _save(loop, step, state, meta)
        latest = step
      except Exception as e:  # pylint: disable=broad-except
        # The periodic checkpoint is still there; say why this one is not.
        logging.error("%s: could not save step %d: %s", loop.name, step, e)
    # Where the next run resumes, for main's "interrupted at ..." line.
    interrupts.enter(loop.name, latest or 0, loop.total_steps)
    raise
  finally:
    loop.store.close()
  return state, meta
