"""Metric writers, the progress line, results.json and plots.

* `create_writer(workdir)`: CLU's `create_default_writer` (TensorBoard event
  files + absl logs in the workdir) when TensorFlow is installed (the
  `.[tfds]` extra), else a `JsonlWriter` (`metrics.jsonl` in the workdir,
  plus TensorBoard event files through the `tensorboard` package's own
  TensorFlow-free writer when it imports) with the same methods. Only
  process 0 writes; other processes log.
* `Progress`: the one progress line per phase (steps/s, ETA, "compiling..."
  before the first step); it also tells `interrupts` which phase runs.
* `write_json` (atomic), `plot_curves` (PNG with matplotlib's Agg backend).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np

from scalable_awt import interrupts


def _plain(value):
  if isinstance(value, (np.ndarray, jax.Array)):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


class JsonlWriter:
  """Writes scalars as JSON lines; the TensorFlow-free stand-in for CLU's writer."""

  def __init__(self, path: str, tensorboard=None):
    """`tensorboard`: an optional `tensorboard.summary.Writer` that gets
    every scalar too."""
    self.path = path
    self.tensorboard = tensorboard
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
    line = {"step": int(step), "time": time.time(),
            **{k: _plain(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(line) + "\n")
    if self.tensorboard is not None:
      for k, v in line.items():
        if k not in ("step", "time") and isinstance(v, (int, float)):
          self.tensorboard.add_scalar(k, v, int(step), wall_time=line["time"])

  def write_hparams(self, hparams: dict[str, Any]) -> None:
    self._file.write(json.dumps({"hparams": {k: _plain(v) for k, v in
                                             hparams.items()}}) + "\n")

  def write_texts(self, step, texts):
    self._file.write(json.dumps({"step": int(step), "texts": texts}) + "\n")

  def write_images(self, step, images):
    del step, images  # Not supported without TensorFlow.

  def flush(self) -> None:
    self._file.flush()
    if self.tensorboard is not None:
      self.tensorboard.flush()

  def close(self) -> None:
    self._file.close()
    if self.tensorboard is not None:
      self.tensorboard.close()
      self.tensorboard = None


class _LogOnlyWriter(JsonlWriter):
  def __init__(self):  # pylint: disable=super-init-not-called
    pass

  def write_scalars(self, step, scalars):
    logging.info("[%d] %s", step, ", ".join(f"{k}={_plain(v):.4g}" if isinstance(
        _plain(v), float) else f"{k}={_plain(v)}" for k, v in scalars.items()))

  def write_hparams(self, hparams):
    pass

  def write_texts(self, step, texts):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def tensorflow_available() -> bool:
  """TensorFlow and CLU's TensorFlow summary writer both import."""
  from scalable_awt import data_sources
  if not data_sources.tensorflow_available():
    return False
  try:
    from clu import metric_writers  # noqa: F401  pylint: disable=unused-import
    return True
  except ImportError:
    return False


tensorboard_available = tensorflow_available  # The old name.


def _tensorboard_only_writer(logdir: str):
  """TensorBoard's own TensorFlow-free event writer, or None if missing."""
  try:
    from tensorboard.summary import Writer  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return Writer(logdir)


def create_writer(logdir: str, *, force_jsonl: bool = False):
  """CLU's default writer into `logdir`; without TensorFlow a `JsonlWriter`.

  Without TensorFlow, scalars go to `metrics.jsonl` and, when the
  `tensorboard` package imports, also to TensorBoard event files written by
  its TensorFlow-free writer.
  """
  if jax.process_index() > 0:
    return _LogOnlyWriter()
  if not force_jsonl and tensorflow_available():
    from clu import metric_writers
    return metric_writers.create_default_writer(logdir)
  logging.info("TensorFlow not available: metrics go to %s/metrics.jsonl", logdir)
  return JsonlWriter(os.path.join(logdir, "metrics.jsonl"),
                     tensorboard=None if force_jsonl else
                     _tensorboard_only_writer(logdir))


class Progress:
  """One progress line per phase, with steps/s and ETA, on stderr.

  The line reads "compiling..." until the first step's metrics arrive. On a
  terminal it is updated in place (carriage return); otherwise (a log file,
  a pipe) one line is printed every ~10% of the phase. This is the only
  progress meter: CLU's `ReportProgress` is not used, since it logs its own,
  differently computed rate and ETA. Steps/s also go to `writer` (as
  `<name>/steps_per_sec`) at those 10% marks. Only process 0 prints.
  `first_step` is where a resumed phase starts. The rate (and the ETA) is
  measured over the last few updates, so compilation and one-off pauses
  (e.g. the first evaluation of a curve) fade out of it.
  """

  def __init__(self, total_steps: int, *, writer=None, name: str = "train",
               log_every_s: float = 30.0, first_step: int = 0, stream=None):
    del log_every_s  # Kept for callers; lines now follow the 10% marks.
    self.total = int(total_steps)
    self.name = name
    self.writer = writer
    self.stream = stream if stream is not None else sys.stderr
    self.enabled = jax.process_index() == 0
    self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self._first_step = int(first_step)
    # (time, step) of the last updates; the rate is taken over them.
    self._recent = collections.deque(maxlen=8)
    self._start_time = time.time()
    self._last_tenth = 10 * self._first_step // max(self.total, 1)
    self._last_draw = 0.0
    self._tag = re.sub(r"[^\w/.-]+", "_", name).strip("_")
    if self._first_step < self.total:
      interrupts.enter(name, self._first_step, self.total)
      resumed = f" (resumed at step {self._first_step})" if first_step else ""
      self._emit(f"{self.name}: {self.total} steps{resumed}, compiling...",
                 final=not self.tty)

  def _emit(self, line: str, final: bool) -> None:
    if not self.enabled:
      return
    if self.tty:
      width = shutil.get_terminal_size((100, 20)).columns - 1
      self.stream.write("\r" + line[:width].ljust(width) + ("\n" if final else ""))
    else:
      self.stream.write(line + "\n")
    self.stream.flush()

  def rate(self, step: int, now: float) -> float:
    """Steps per second over the last updates (since the start, at first)."""
    since, from_step = (self._recent[0] if self._recent else
                        (self._start_time, self._first_step))
    return (step - from_step) / max(now - since, 1e-9)

  def __call__(self, step: int, extra: str = "") -> None:
    now = time.time()
    step = int(step)
    rate = self.rate(step, now)
    first = not self._recent
    self._recent.append((now, step))
    interrupts.enter(self.name, step, self.total)
    done = step >= self.total
    eta = (self.total - step) / rate if rate > 0 else math.inf
    pct = 100.0 * step / max(self.total, 1)
    if done:
      timing = f"in {_fmt_time(now - self._start_time)}"
    elif first:  # Mostly compilation: no rate to extrapolate yet.
      timing = f"compiled in {_fmt_time(now - self._start_time)}"
    else:
      timing = f"{rate:.1f} steps/s, ETA {_fmt_time(eta)}"
    line = f"{self.name}: step {step}/{self.total} ({pct:3.0f}%) {timing}"
    if extra:
      line += f"  {extra.strip()}"
    tenth = 10 * step // max(self.total, 1)
    crossed = tenth > self._last_tenth or done
    if crossed:
      self._last_tenth = tenth
      if self.writer is not None and self.enabled:
        self.writer.write_scalars(step, {f"{self._tag}/steps_per_sec": rate})
    if self.tty:
      # Redraw at most 10 times a second; the last one always.
      if done or now - self._last_draw >= 0.1:
        self._last_draw = now
        self._emit(line, final=done)
    elif crossed:
      self._emit(line, final=True)
    if done:
      interrupts.leave(self.name)


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (temp file + rename), on process 0 only."""
  if jax.process_index() > 0:
    return
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=False, default=_plain)
    f.write("\n")
  os.replace(tmp, path)


def read_json(path: str, default=None):
  if not os.path.exists(path):
    return default
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def plot_curves(path: str, curves: dict[str, list[dict]], *,
                keys=(("train_adv_accuracy", "train (adversarial)"),
                      ("test_natural_accuracy", "test natural"),
                      ("test_robust_accuracy", "test robust (PGD)")),
                x_key: str = "epoch", title: str = "") -> str | None:
  """One panel per key, one line per model: `curves[model] = [{epoch, ...}]`."""
  if jax.process_index() > 0 or not any(curves.values()):
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4),
                           squeeze=False)
  for ax, (key, label) in zip(axes[0], keys):
    for model, rows in curves.items():
      pts = [(r[x_key], r[key]) for r in rows if r.get(key) is not None]
      if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", markersize=3, label=model)
    ax.set_title(label)
    ax.set_xlabel(x_key)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("accuracy")
  # The legend goes on the last panel with lines (test curves may be off).
  with_lines = [ax for ax in axes[0] if ax.get_lines()]
  if with_lines:
    with_lines[-1].legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
