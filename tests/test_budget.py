"""The run's time budget: how the phases share it (budget.py)."""
import pytest

from scalable_awt import budget


def test_no_budget_never_stops():
  assert budget.Budget(0.0).deadline("search", 3) is None


def test_phase_time_is_shared_over_the_methods_left(monkeypatch):
  clock = {"now": 1000.0}
  monkeypatch.setattr(budget.time, "time", lambda: clock["now"])
  plan = budget.Budget(100.0, start=1000.0)
  # Searches end by 30 s: the first of three gets a third of that.
  assert plan.deadline("search", 3) == pytest.approx(1010.0)
  # A search that ended early hands its time on: at 1004 s, two left share 26 s.
  clock["now"] = 1004.0
  assert plan.deadline("search", 2) == pytest.approx(1017.0)
  # Training ends by 85 s of the budget; the last method gets all that is left.
  clock["now"] = 1040.0
  assert plan.deadline("train", 1) == pytest.approx(1085.0)
  # Past a phase's end, a method gets no time (it saves where it is).
  clock["now"] = 1090.0
  assert plan.deadline("train", 2) == pytest.approx(1090.0)
