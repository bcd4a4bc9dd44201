"""The one resumable loop: saves, resumes exactly, saves on interrupt, stops on NaN."""
import jax.numpy as jnp
import numpy as np
import pytest

from scalable_awt import checkpoints as ckpt_lib
from scalable_awt import interrupts
from scalable_awt import loop

TOTAL = 7


def _batch(step):  # A function of the step only, as data.Batches is.
  return {"value": np.float32(step + 1)}


def _step(state, batch):
  new = {"total": state["total"] + batch["value"], "step": state["step"] + 1}
  return new, {"loss": new["total"]}


def _fresh():
  return {"total": jnp.zeros((), jnp.float32), "step": jnp.zeros((), jnp.int32)}


def _on_metrics(step, values, state, meta):
  del state
  meta["history"].append([step, values["loss"]])
  return f"loss {values['loss']}"


def _loop(directory, **overrides):
  kwargs = dict(name="toy", store=ckpt_lib.Checkpoints(directory, keep=5),
                total_steps=TOTAL, save_every=3, step_fn=_step, get_batch=_batch,
                on_metrics=_on_metrics)
  kwargs.update(overrides)
  return loop.Loop(**kwargs)


def _start(directory, **overrides):
  toy = _loop(directory, **overrides)
  tree, meta = loop.restore(toy.store, _fresh(), {"total_steps": TOTAL, "history": []})
  return toy, tree, meta


def _run(directory, **overrides):
  toy, state, meta = _start(directory, **overrides)
  return loop.run(toy, state, meta)


def _saved_steps(directory):
  with ckpt_lib.Checkpoints(directory) as store:
    return store.all_steps()


def test_runs_to_the_end_and_saves_periodically(tmp_path):
  state, meta = _run(str(tmp_path / "a"))
  assert float(state["total"]) == sum(range(1, TOTAL + 1))
  assert meta["step"] == TOTAL and len(meta["history"]) == TOTAL
  assert _saved_steps(str(tmp_path / "a")) == [3, 6, 7]
  # A finished loop restores at its end and runs no step.
  state2, meta2 = _run(str(tmp_path / "a"), step_fn=None)
  assert meta2 == meta and float(state2["total"]) == float(state["total"])


def test_interrupt_saves_the_current_step_and_resume_is_exact(tmp_path):
  straight = _run(str(tmp_path / "straight"))

  def interrupted(step):
    if step == 5:
      raise KeyboardInterrupt("preempted")
    return _batch(step)

  directory = str(tmp_path / "resumed")
  with pytest.raises(KeyboardInterrupt):
    _run(directory, get_batch=interrupted)
  assert _saved_steps(directory) == [3, 5]  # Step 5 saved on the interrupt.
  assert interrupts.current() == {"phase": "toy", "step": 5, "total": TOTAL}
  state, meta = _run(directory)
  assert float(state["total"]) == float(straight[0]["total"])
  assert meta == straight[1]


def test_interrupt_in_the_middle_of_bookkeeping_saves_the_step_before(tmp_path):
  straight = _run(str(tmp_path / "straight"))

  def on_metrics(step, values, state, meta):
    meta["history"].append("half-done")  # Must not reach the checkpoint.
    if step == 5:
      raise KeyboardInterrupt
    meta["history"].pop()
    return _on_metrics(step, values, state, meta)

  directory = str(tmp_path / "w")
  with pytest.raises(KeyboardInterrupt):
    _run(directory, on_metrics=on_metrics)
  assert _saved_steps(directory) == [3, 4]
  state, meta = _run(directory)
  assert meta == straight[1] and float(state["total"]) == float(straight[0]["total"])


def test_non_finite_loss_stops_with_the_step_and_last_checkpoint(tmp_path):
  def step_fn(state, batch):
    state, metrics = _step(state, batch)
    return state, {"loss": jnp.where(state["step"] == 5, jnp.nan, metrics["loss"])}

  with pytest.raises(FloatingPointError,
                     match=r"toy: non-finite loss nan at step 5 \(last checkpoint: step 3\)"):
    _run(str(tmp_path / "w"), step_fn=step_fn)


def test_metrics_every_reads_metrics_only_then(tmp_path):
  _, meta = _run(str(tmp_path / "w"), metrics_every=3)
  assert [row[0] for row in meta["history"]] == [3, 6, 7]


def test_metrics_offset_shifts_the_steps_that_read_metrics(tmp_path):
  _, meta = _run(str(tmp_path / "w"), metrics_every=3, metrics_offset=1)
  assert [row[0] for row in meta["history"]] == [1, 4, 7]


def test_restore_refuses_a_checkpoint_of_another_schedule(tmp_path):
  directory = str(tmp_path / "w")
  _run(directory)
  store = ckpt_lib.Checkpoints(directory)
  with pytest.raises(RuntimeError, match="total_steps=7; this run has 9"):
    loop.restore(store, _fresh(), {"total_steps": 9, "history": []})


def test_deadline_stops_saves_and_the_next_run_finishes(tmp_path):
  """A loop out of time (budget.py) keeps its step, says so, and resumes."""
  directory = str(tmp_path / "d")
  calls = []

  def counting_batch(step):
    calls.append(step)
    return _batch(step)

  # A deadline already past: no step runs, step 0 is saved as truncated.
  state, meta = _run(directory, deadline=0.0, get_batch=counting_batch)
  assert meta["step"] == 0 and meta["truncated"] and not calls
  assert _saved_steps(directory) == [0]
  # No deadline: the same loop resumes and runs to the end, no longer truncated.
  state, meta = _run(directory)
  assert meta["step"] == TOTAL and "truncated" not in meta
  assert float(state["total"]) == sum(range(1, TOTAL + 1))
