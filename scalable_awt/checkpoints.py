"""Crash-safe checkpoints with orbax's `CheckpointManager`.

A `Checkpoints` object owns one directory of numbered steps. Each step holds
`state` (any pytree of arrays, saved with `StandardSave`) and `meta` (JSON:
step, phase, epoch, data position, metric accumulators, history, config
hash). Orbax writes every step into a temporary folder and renames it when
complete, so a process killed mid-save leaves no half-written step behind
(the leftovers are removed at the next start).

Restoring goes into an abstract target (shapes, dtypes, shardings), so
optimizer states come back as their own types and on the current device
layout. If the newest step cannot be read, it is moved to `<dir>.corrupt/`
(never deleted, never overwritten) and the previous step is tried; when no
readable step is left, `CorruptCheckpointError` stops the run and says what to
do. Resume priority: the newest readable checkpoint in the workdir, else a
fresh start.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

PyTree = Any


class CorruptCheckpointError(RuntimeError):
  """No readable checkpoint is left in a directory that has some."""


def abstract_like(tree: PyTree, sharding=None) -> PyTree:
  """`ShapeDtypeStruct`s (with `sharding`) for every array leaf of `tree`."""
  def leaf(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                sharding=sharding if sharding is not None
                                else getattr(x, "sharding", None))
  return jax.tree.map(leaf, tree)


class Checkpoints:
  """Numbered checkpoints of one pytree plus JSON metadata, newest K kept."""

  def __init__(self, directory: str, *, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.keep = int(keep)
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=True)
    return ocp.CheckpointManager(self.directory, options=options,
                                 item_names=("state", "meta"))

  # -------------------------------------------------------------- queries
  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  # -------------------------------------------------------------- save
  def save(self, step: int, state: PyTree, meta: dict, *,
           wait: bool = False) -> None:
    """Saves step `step` (asynchronously); an existing step is left alone."""
    step = int(step)
    if step in self._manager.all_steps():
      logging.info("checkpoint %s/%d exists; not overwriting it",
                   self.directory, step)
      return
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                       force=True)
    if wait:
      self._manager.wait_until_finished()

  # -------------------------------------------------------------- restore
  def restore_meta(self, step: int | None = None) -> dict | None:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    out = self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))
    return dict(out["meta"])

  def restore(self, abstract_state: PyTree) -> tuple[int, PyTree, dict] | None:
    """`(step, state, meta)` of the newest readable step, or None if empty.

    Unreadable steps are moved aside (see the module docstring).
    """
    while True:
      step = self.latest_step()
      if step is None:
        return None
      try:
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            meta=ocp.args.JsonRestore()))
        return step, out["state"], dict(out["meta"])
      except Exception as e:  # Orbax/tensorstore raise many types.
        remaining = [s for s in self.all_steps() if s != step]
        logging.error("checkpoint %s/%d is unreadable (%s: %s)", self.directory,
                      step, type(e).__name__, str(e)[:500])
        moved = self._quarantine(step)
        if not remaining:
          raise CorruptCheckpointError(
              f"The only checkpoint in {self.directory} (step {step}) is "
              f"unreadable ({type(e).__name__}: {str(e)[:200]}); it was moved "
              f"to {moved}. Nothing was overwritten. Start over by running "
              "again (the phase restarts from its beginning), or restore the "
              "checkpoint from a backup.") from e
        logging.warning("falling back to checkpoint step %d", remaining[-1])

  def _quarantine(self, step: int) -> str:
    """Moves step `step` to `<dir>.corrupt/<step>-<time>` and reopens."""
    self._manager.close()
    source = os.path.join(self.directory, str(step))
    target_dir = self.directory + ".corrupt"
    target = os.path.join(target_dir, f"{step}-{int(time.time())}")
    if jax.process_index() == 0 and os.path.exists(source):
      os.makedirs(target_dir, exist_ok=True)
      shutil.move(source, target)
    self._manager = self._open()
    return target

  # -------------------------------------------------------------- lifecycle
  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
