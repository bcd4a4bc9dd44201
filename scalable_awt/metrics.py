"""Metric writers, progress reporting, results.json and plots.

* `create_writer(workdir)`: CLU's `create_default_writer` (TensorBoard event
  files + absl logs in the workdir) when TensorFlow is installed, else a
  `JsonlWriter` (`metrics.jsonl` in the workdir) with the same methods. Only
  process 0 writes; other processes log.
* `Progress`: CLU's `ReportProgress` (steps/s and ETA into the writer) when it
  imports, plus a one-line progress display on an interactive terminal and a
  plain log line every `log_every_s` seconds otherwise.
* `write_json` (atomic), `plot_curves` (PNG with matplotlib's Agg backend).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np


def _plain(value):
  if isinstance(value, (np.ndarray, jax.Array)):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


class JsonlWriter:
  """Writes scalars as JSON lines; the TensorFlow-free stand-in for CLU's writer."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
    line = {"step": int(step), "time": time.time(),
            **{k: _plain(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(line) + "\n")

  def write_hparams(self, hparams: dict[str, Any]) -> None:
    self._file.write(json.dumps({"hparams": {k: _plain(v) for k, v in
                                             hparams.items()}}) + "\n")

  def write_texts(self, step, texts):
    self._file.write(json.dumps({"step": int(step), "texts": texts}) + "\n")

  def write_images(self, step, images):
    del step, images  # Not supported without TensorFlow.

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


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


def tensorboard_available() -> bool:
  try:
    from scalable_awt.data import import_tensorflow
    import_tensorflow()
    from clu import metric_writers  # noqa: F401  pylint: disable=unused-import
    return True
  except ImportError:
    return False


def create_writer(logdir: str, *, force_jsonl: bool = False):
  """CLU's default writer into `logdir`, or a `JsonlWriter` without TensorFlow."""
  if jax.process_index() > 0:
    return _LogOnlyWriter()
  if not force_jsonl and tensorboard_available():
    from clu import metric_writers
    return metric_writers.create_default_writer(logdir)
  logging.info("TensorFlow not available: metrics go to %s/metrics.jsonl", logdir)
  return JsonlWriter(os.path.join(logdir, "metrics.jsonl"))


class Progress:
  """Steps/s and ETA: CLU's ReportProgress if it imports, plus a terminal line."""

  def __init__(self, total_steps: int, *, writer=None, name: str = "train",
               log_every_s: float = 30.0, first_step: int = 0):
    self.total = int(total_steps)
    self.name = name
    self.log_every_s = log_every_s
    self.tty = sys.stderr.isatty() and jax.process_index() == 0
    self._start_time = time.time()
    self._start_step = int(first_step)
    self._last_log = 0.0
    self._clu = None
    if writer is not None and not isinstance(writer, JsonlWriter) and \
        tensorboard_available():
      from clu import periodic_actions
      self._clu = periodic_actions.ReportProgress(
          num_train_steps=self.total, writer=writer, every_secs=log_every_s)

  def __call__(self, step: int, extra: str = "") -> None:
    if self._clu is not None:
      self._clu(step)
    now = time.time()
    done = step - self._start_step
    rate = done / max(now - self._start_time, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else math.inf
    line = (f"{self.name}: step {step}/{self.total} "
            f"({100.0 * step / max(self.total, 1):.0f}%) {rate:.2f} steps/s "
            f"ETA {_fmt_time(eta)} {extra}")
    if self.tty:
      width = 20
      filled = int(width * step / max(self.total, 1))
      sys.stderr.write("\r[" + "#" * filled + "." * (width - filled) + "] " +
                       line[:110].ljust(110))
      sys.stderr.flush()
      if step >= self.total:
        sys.stderr.write("\n")
    elif now - self._last_log >= self.log_every_s or step >= self.total:
      self._last_log = now
      logging.info("%s", line)

  def timed(self, name: str):
    if self._clu is not None:
      return self._clu.timed(name)
    import contextlib
    return contextlib.nullcontext()


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
