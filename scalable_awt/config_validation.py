"""Start-up validation of the final (post-override) config.

`validate(config)` collects every problem and raises one `ConfigError` whose
message names each offending key, its value and what is allowed, e.g.

    config.search.density=1.5: must be in (0, 1]
    config.search.dnsity: unknown key; keys of config.search are: ...

`ml_collections` does not re-run any check after command-line overrides, so
the runner calls this on the config it is about to use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import ml_collections

from scalable_awt import config_schema as schema


class ConfigError(ValueError):
  """A config that the runner refuses to run; the message lists every problem."""


def _as_dict(config) -> dict:
  if isinstance(config, (ml_collections.ConfigDict,
                         ml_collections.FrozenConfigDict)):
    return config.to_dict()
  return dict(config)


def unknown_keys(config: Mapping, reference: Mapping, prefix: str = "config"
                 ) -> list[str]:
  """Messages for keys of `config` that `reference` (the schema) lacks."""
  problems = []
  for key, value in config.items():
    name = f"{prefix}.{key}"
    if key not in reference:
      problems.append(
          f"{name}: unknown key; keys of {prefix} are: "
          f"{', '.join(sorted(reference))}")
    elif isinstance(reference[key], Mapping):
      if not isinstance(value, Mapping):
        problems.append(f"{name}: must be a group of keys, got {value!r}")
      else:
        problems.extend(unknown_keys(value, reference[key], name))
  return problems


def validate(config, *, implemented_methods=None) -> None:
  """Raises `ConfigError` listing every problem with `config`; else returns."""
  c = _as_dict(config)
  ref = schema.get_config().to_dict()
  problems = unknown_keys(c, ref)
  # Missing keys would make the run fail later with a KeyError.
  def missing(cfg, reference, prefix="config"):
    out = []
    for key, value in reference.items():
      if key not in cfg:
        out.append(f"{prefix}.{key}: missing (default {value!r})")
      elif isinstance(value, Mapping) and isinstance(cfg[key], Mapping):
        out.extend(missing(cfg[key], value, f"{prefix}.{key}"))
    return out
  problems += missing(c, ref)
  if problems:
    raise ConfigError(_format(problems))

  def check(ok, key, value, allowed):
    if not ok:
      problems.append(f"config.{key}={value!r}: {allowed}")

  def one_of(key, value, allowed):
    check(value in allowed, key, value,
          f"must be one of {', '.join(map(repr, allowed))}")

  def number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)

  def positive_int(key, value, allow_minus_one=False):
    ok = isinstance(value, int) and not isinstance(value, bool) and (
        value >= 1 or (allow_minus_one and value == -1))
    check(ok, key, value,
          "must be an integer >= 1" + (" or -1 (all)" if allow_minus_one else ""))

  s, d, a, t, e, m, k = (c["search"], c["data"], c["attack"], c["train"],
                         c["eval"], c["model"], c["checkpoint"])
  check(isinstance(c["seed"], int), "seed", c["seed"], "must be an integer")
  density = s["density"]
  check(number(density) and 0.0 < density <= 1.0, "search.density", density,
        "must be in (0, 1] (the fraction of prunable weights kept)")
  one_of("search.estimator", s["estimator"], schema.ESTIMATORS)
  check(isinstance(s["epochs"], int) and s["epochs"] >= 0, "search.epochs",
        s["epochs"], "must be an integer >= 0")
  positive_int("search.batch_size", s["batch_size"])
  check(isinstance(s["num_samples"], int) and s["num_samples"] >= 0, "search.num_samples",
        s["num_samples"], "must be an integer >= 0 (0 = the estimator's default)")
  chunk = s["estimator_chunk_size"]
  check(isinstance(chunk, int) and chunk >= 0, "search.estimator_chunk_size", chunk,
        "must be an integer >= 0 (0 = all probes/directions in one pass)")
  check(not chunk or s["estimator"] in schema.CHUNKED_ESTIMATORS,
        "search.estimator_chunk_size", chunk,
        f"applies to random_projection* and output_probes* only, not "
        f"{s['estimator']!r}; set it to 0")
  for key in ("learning_rate", "kernel_weight"):
    check(number(s[key]) and s[key] > 0, f"search.{key}", s[key], "must be > 0")
  check(number(s["l2_weight"]) and s["l2_weight"] >= 0, "search.l2_weight",
        s["l2_weight"], "must be >= 0")
  positive_int("search.kernel_batch", s["kernel_batch"])
  positive_int("search.mask_update_period", s["mask_update_period"])
  positive_int("search.attack_steps", s["attack_steps"])
  positive_int("search.log_every_steps", s["log_every_steps"])
  one_of("search.reduction", s["reduction"], schema.SEARCH_REDUCTIONS)
  one_of("search.density_schedule", s["density_schedule"], schema.DENSITY_SCHEDULES)
  one_of("search.mask_distribution", s["mask_distribution"], schema.MASK_DISTRIBUTIONS)
  check(number(s["prune_until_fraction"]) and 0 < s["prune_until_fraction"] <= 1,
        "search.prune_until_fraction", s["prune_until_fraction"], "must be in (0, 1]")
  check(number(s["attack_step_size"]) and s["attack_step_size"] >= 0,
        "search.attack_step_size", s["attack_step_size"], "must be >= 0 (0 = default)")

  one_of("data.name", d["name"], schema.DATASETS)
  one_of("data.source", d["source"], schema.DATA_SOURCES)
  positive_int("data.num_train", d["num_train"], allow_minus_one=True)
  positive_int("data.num_test", d["num_test"], allow_minus_one=True)
  check(number(d["digits_test_fraction"]) and 0 < d["digits_test_fraction"] < 1,
        "data.digits_test_fraction", d["digits_test_fraction"],
        "must be in (0, 1)")
  support, dim = d["toy_support"], d["toy_dim"]
  check(isinstance(support, int) and not isinstance(support, bool)
        and 0 <= support and (not isinstance(dim, int) or support <= dim),
        "data.toy_support", support,
        "must be an integer in [0, data.toy_dim] (0 = all coordinates)")
  if d["name"] in ("image_folder", "idx", "npz") and not d["data_dir"]:
    problems.append(
        f"config.data.data_dir='': data.name={d['name']!r} needs data.data_dir "
        "(the folder or file that holds the data)")

  one_of("model.name", m["name"], schema.MODELS)
  one_of("model.vgg_norm", m["vgg_norm"], ("batch", "group", "none"))

  eps = a["epsilon"]
  check(number(eps) and math.isfinite(eps) and eps >= 0, "attack.epsilon", eps,
        "must be a finite number >= 0 (0 = natural training)")
  one_of("attack.norm", a["norm"], schema.NORMS)
  one_of("attack.domain", a["domain"], schema.DOMAINS)
  if number(eps) and eps > 0:
    positive_int("attack.train_steps", a["train_steps"])
    check(number(a["train_step_size"]) and a["train_step_size"] > 0,
          "attack.train_step_size", a["train_step_size"], "must be > 0")

  check(isinstance(t["epochs"], int) and t["epochs"] >= 0, "train.epochs",
        t["epochs"], "must be an integer >= 0")
  positive_int("train.batch_size", t["batch_size"])
  one_of("train.optimizer", t["optimizer"], ("adam", "sgd"))
  one_of("train.schedule", t["schedule"], ("constant", "cosine", "piecewise"))
  check(number(t["learning_rate"]) and t["learning_rate"] > 0,
        "train.learning_rate", t["learning_rate"], "must be > 0")
  check(number(t["weight_decay"]) and t["weight_decay"] >= 0,
        "train.weight_decay", t["weight_decay"], "must be >= 0")
  check(number(t["momentum"]) and 0 <= t["momentum"] < 1, "train.momentum",
        t["momentum"], "must be in [0, 1)")
  check(isinstance(t["warmup_steps"], int) and t["warmup_steps"] >= 0,
        "train.warmup_steps", t["warmup_steps"], "must be an integer >= 0")
  warmup = t["epsilon_warmup_epochs"]
  check(isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 0,
        "train.epsilon_warmup_epochs", warmup, "must be an integer >= 0")
  positive_int("train.log_every_steps", t["log_every_steps"])
  check(isinstance(t["curve_every_epochs"], int) and t["curve_every_epochs"] >= 0,
        "train.curve_every_epochs", t["curve_every_epochs"],
        "must be an integer >= 0")
  positive_int("train.curve_examples", t["curve_examples"])
  positive_int("train.curve_pgd_steps", t["curve_pgd_steps"])

  from scalable_awt.evaluation import ATTACKS  # Heavy import only here.
  attacks = tuple(e["attacks"]) if isinstance(e["attacks"], (list, tuple)) else ()
  check(bool(attacks) and all(x in ATTACKS for x in attacks)
        and len(set(attacks)) == len(attacks), "eval.attacks", e["attacks"],
        f"must be a non-empty tuple of distinct names from "
        f"{', '.join(map(repr, ATTACKS))}")
  positive_int("eval.pgd_steps", e["pgd_steps"])
  positive_int("eval.pgd_restarts", e["pgd_restarts"])
  positive_int("eval.apgd_steps", e["apgd_steps"])
  positive_int("eval.batch_size", e["batch_size"])
  positive_int("eval.num_examples", e["num_examples"], allow_minus_one=True)
  check(number(e["step_size"]) and (e["step_size"] > 0 or e["step_size"] == -1),
        "eval.step_size", e["step_size"], "must be > 0 or -1 (default)")

  positive_int("checkpoint.every_steps", k["every_steps"])
  positive_int("checkpoint.keep", k["keep"])

  phases = c["phases"]
  if not isinstance(phases, (list, tuple)) or any(p not in schema.PHASES
                                                  for p in phases):
    problems.append(f"config.phases={phases!r}: must be a tuple of "
                    f"{', '.join(map(repr, schema.PHASES))}")
  methods = c["methods"]
  known = tuple(implemented_methods or ())
  if not isinstance(methods, (list, tuple)) or not methods:
    problems.append(f"config.methods={methods!r}: must be a non-empty tuple")
  else:
    for meth in methods:
      if known and meth not in known:
        problems.append(f"config.methods: {meth!r} is not available; "
                        f"must be among {', '.join(map(repr, known))}")
    if len(set(methods)) != len(methods):
      problems.append(f"config.methods={methods!r}: lists a method twice")
  if problems:
    raise ConfigError(_format(problems))


def _format(problems: list[str]) -> str:
  return "invalid config:\n  " + "\n  ".join(problems)
