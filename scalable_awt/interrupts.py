"""Ctrl-C and SIGTERM as one exception, and where the run was when it came.

SLURM (and most schedulers) preempt a job with SIGTERM and kill it a grace
period later. `install_sigterm_handler()` turns the first SIGTERM into a
`Preempted` exception, a `KeyboardInterrupt` subclass, so one `except
KeyboardInterrupt` in the step loop saves a checkpoint for both Ctrl-C and
preemption. Later SIGTERMs are ignored so that they cannot interrupt that
save; the scheduler's SIGKILL still ends the job.

`metrics.Progress` records the running phase here (`enter`, `leave`) so that
main can say where the run stopped: `describe()`.
"""

from __future__ import annotations

import signal
import threading


class Preempted(KeyboardInterrupt):
  """Raised in the main thread on SIGTERM (preemption, `kill`, `scancel`)."""


# The phase running now, as {"phase": name, "step": int, "total": int}, or
# None between phases. Set by `metrics.Progress`.
_current: dict | None = None


def enter(phase: str, step: int, total: int) -> None:
  """Records that `phase` is running at `step` of `total`."""
  global _current
  _current = {"phase": phase, "step": int(step), "total": int(total)}


def leave(phase: str) -> None:
  """Records that `phase` finished (if it is the one running)."""
  global _current
  if _current is not None and _current["phase"] == phase:
    _current = None


def current() -> dict | None:
  return None if _current is None else dict(_current)


def describe() -> str:
  """Where the run is: "at train[awt] step 120/315", or "during setup or
  evaluation" between step loops."""
  if _current is None:
    return "during setup or evaluation"
  return f"at {_current['phase']} step {_current['step']}/{_current['total']}"


def _raise_preempted(signum, frame):
  del frame
  # One exception only: a second SIGTERM must not break the checkpoint save
  # that the first one started.
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  raise Preempted(f"received signal {signum}")


def install_sigterm_handler():
  """Makes SIGTERM raise `Preempted` in the main thread; returns the old handler.

  Does nothing (returns None) outside the main thread, where Python cannot
  install signal handlers.
  """
  if threading.current_thread() is not threading.main_thread():
    return None
  return signal.signal(signal.SIGTERM, _raise_preempted)
