"""A wall-clock budget for a whole run, shared out over its phases.

`config.time_budget_s` > 0 bounds a run's wall time (e.g. a GPU lease of
fixed length): the ticket searches may use the first `SEARCH_SHARE` of it,
training runs until `TRAIN_END` of it, and the rest is left for evaluation,
which is never cut short. Within a phase the time left is split evenly over
the methods still to run, so a method that finishes early hands its time on.

A loop that reaches its deadline stops at the step it reached, saves it and
reports it (`loop.run` sets `meta["truncated"]`): the results say how many of
the planned steps ran. Running the same command again resumes the training
from there with a fresh budget; a search that was cut short has already
produced its mask, which is final.
"""

from __future__ import annotations

import dataclasses
import time

SEARCH_SHARE = 0.3  # Searches end by 30% of the budget...
TRAIN_END = 0.85  # ...training by 85%; evaluation gets the rest.
_PHASE_END = {"search": SEARCH_SHARE, "train": TRAIN_END}


@dataclasses.dataclass
class Budget:
  """`seconds` of wall time from `start`; 0 = unbounded."""
  seconds: float = 0.0
  start: float = dataclasses.field(default_factory=time.time)

  def deadline(self, phase: str, remaining: int) -> float | None:
    """When the next of `remaining` methods of `phase` must stop (None: never)."""
    if self.seconds <= 0:
      return None
    phase_end = self.start + _PHASE_END[phase] * self.seconds
    now = time.time()
    return now + max(0.0, phase_end - now) / max(1, remaining)
