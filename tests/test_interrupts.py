"""SIGTERM as `Preempted`, and the progress line that records the phase."""
import io
import os
import signal
import time

import pytest

from scalable_awt import interrupts
from scalable_awt import metrics


def test_sigterm_raises_preempted_once():
  old = interrupts.install_sigterm_handler()
  try:
    with pytest.raises(interrupts.Preempted) as e:
      os.kill(os.getpid(), signal.SIGTERM)  # Handled before the next line.
      time.sleep(5)
    assert isinstance(e.value, KeyboardInterrupt)
    # A second SIGTERM must not interrupt the checkpoint save of the first.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
  finally:
    signal.signal(signal.SIGTERM, old)


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_on_a_pipe_prints_a_line_every_tenth():
  out = io.StringIO()
  progress = metrics.Progress(200, name="train[x]", stream=out)
  assert out.getvalue() == "train[x]: 200 steps, compiling...\n"
  assert interrupts.describe() == "at train[x] step 0/200"
  for step in range(1, 201):
    progress(step, "loss 0.5")
    if step == 57:
      assert interrupts.describe() == "at train[x] step 57/200"
  lines = out.getvalue().splitlines()
  assert len(lines) == 11, lines  # "compiling..." and one per 10%.
  assert lines[1].startswith("train[x]: step 20/200 ( 10%)")
  assert "steps/s, ETA" in lines[1] and lines[1].endswith("loss 0.5")
  assert lines[-1].startswith("train[x]: step 200/200 (100%) in ")
  assert interrupts.current() is None  # Done: between phases again.
  assert interrupts.describe() == "during setup or evaluation"


def test_progress_first_update_reports_compilation_not_a_rate():
  out = io.StringIO()
  progress = metrics.Progress(10, name="p", stream=out)
  progress(5)  # The first metrics arrive after compiling: no rate yet.
  progress(7)
  lines = out.getvalue().splitlines()
  assert "compiled in" in lines[1] and "ETA" not in lines[1]
  assert "steps/s, ETA" in lines[2]
  progress(10)


def test_progress_resumed_and_on_a_terminal():
  out = _Terminal()
  progress = metrics.Progress(50, name="search[awt]", stream=out, first_step=30)
  for step in range(31, 51):
    progress(step)
  text = out.getvalue()
  assert "(resumed at step 30), compiling..." in text
  assert text.count("\n") == 1 and text.endswith("\n")  # One updated line.
  assert text.count("\r") >= 2
  assert "step 50/50 (100%)" in text.rsplit("\r", 1)[1]


def test_progress_writes_steps_per_second(tmp_path):
  writer = metrics.JsonlWriter(str(tmp_path / "metrics.jsonl"))
  progress = metrics.Progress(10, name="train[a b]", writer=writer,
                              stream=io.StringIO())
  for step in range(1, 11):
    progress(step)
  writer.close()
  rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(rows) == 10 and '"train_a_b/steps_per_sec"' in rows[0]
