"""The workdir's bookkeeping: config.json, the resume guard and status.json.

    config.json       resolved config of the first run (later runs must match
                      it on every results-relevant key: `check_resume_config`)
    config.last.json  resolved config of the latest run
    status.json       finished work per phase and method, wall time per phase
"""

from __future__ import annotations

import logging
import os

from scalable_awt import config_validation
from scalable_awt import metrics as metrics_lib

# Keys that may change between runs in one workdir (they do not change what
# is computed, or they only add work); any other change is refused.
RESUME_MUTABLE_KEYS = ("phases", "methods", "eval", "checkpoint", "time_budget_s",
                       "train.log_every_steps", "data.data_dir",
                       "data.source", "data.download")


def flatten(d: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for k, v in d.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, name + "."))
    else:
      out[name] = v
  return out


def check_resume_config(workdir: str, config_json: dict) -> None:
  """Refuses to resume a workdir whose results-relevant config differs."""
  old = metrics_lib.read_json(os.path.join(workdir, "config.json"))
  if old is None:
    return
  new, old = flatten(config_json), flatten(old)
  # Keys the old run did not have come from a newer schema: allowed.
  added = sorted(set(new) - set(old))
  if added:
    logging.warning("config keys new since this workdir was created: %s",
                    ", ".join(added))
  changed = sorted(k for k in old if old.get(k) != new.get(k)
                   and not any(k == m or k.startswith(m + ".")
                               for m in RESUME_MUTABLE_KEYS))
  if changed:
    details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                        for k in changed)
    raise config_validation.ConfigError(
        f"workdir {workdir} holds a run with a different config ({details}). "
        "Use a new --workdir, or the same values to resume. Keys that may "
        f"change between runs: {', '.join(RESUME_MUTABLE_KEYS)}.")


def prepare(workdir: str, config_json: dict) -> str:
  """Creates `workdir`, checks the resume guard, writes the config files."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  check_resume_config(workdir, config_json)
  if not os.path.exists(os.path.join(workdir, "config.json")):
    metrics_lib.write_json(os.path.join(workdir, "config.json"), config_json)
  metrics_lib.write_json(os.path.join(workdir, "config.last.json"), config_json)
  return workdir


class Status:
  """`status.json`: finished work per phase and method, wall time per phase."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "status.json")
    self.data = metrics_lib.read_json(self.path, {"done": {}, "wall_time_s": {}})

  def done(self, phase: str, method: str) -> bool:
    return method in self.data["done"].get(phase, {})

  def info(self, phase: str, method: str):
    return self.data["done"].get(phase, {}).get(method)

  def mark(self, phase: str, method: str, info=True) -> None:
    self.data["done"].setdefault(phase, {})[method] = info
    self.save()

  def add_time(self, phase: str, seconds: float) -> None:
    t = self.data["wall_time_s"]
    t[phase] = t.get(phase, 0.0) + float(seconds)
    self.save()

  def save(self) -> None:
    metrics_lib.write_json(self.path, self.data)
