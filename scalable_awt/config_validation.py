"""Start-up validation of the final (post-override) config.

`validate(config)` collects every problem and raises one `ConfigError` whose
message names each offending key, its value and what is allowed, e.g.

    config.search.density=1.5: must be in (0, 1]
    config.search.dnsity: unknown key; keys of config.search are: ...

`ml_collections` does not re-run any check after command-line overrides, so
the runner calls this on the config it is about to use (`settings.resolve`).
The allowed names come from the modules that implement them (estimators,
masks, ticket_search, attacks, evaluation, adversarial_training), imported
here only when a config is validated, so reading a config file needs no JAX.
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


def missing_keys(config: Mapping, reference: Mapping, prefix: str = "config"
                 ) -> list[str]:
  """Messages for schema keys that `config` lacks (a later KeyError otherwise)."""
  out = []
  for key, value in reference.items():
    if key not in config:
      out.append(f"{prefix}.{key}: missing (default {value!r})")
    elif isinstance(value, Mapping) and isinstance(config[key], Mapping):
      out.extend(missing_keys(config[key], value, f"{prefix}.{key}"))
  return out


def allowed_values() -> dict[str, tuple]:
  """The names each string-valued key accepts, from the implementing modules."""
  # Heavy (JAX) imports only here, when a config is validated.
  from scalable_awt import adversarial_training, attacks, estimators, evaluation
  from scalable_awt import masks, ticket_search
  return {
      "search.estimator": tuple(estimators.NAMES),
      "search.chunked_estimators": tuple(estimators.CHUNKED),
      "search.reduction": tuple(ticket_search.REDUCTIONS),
      "search.density_schedule": tuple(ticket_search.DENSITY_SCHEDULES),
      "search.mask_distribution": tuple(masks.DISTRIBUTIONS),
      "search.precision": tuple(estimators.PRECISIONS),
      "data.name": schema.DATASETS,
      "data.source": schema.DATA_SOURCES,
      "model.name": schema.MODELS,
      "model.vgg_norm": schema.VGG_NORMS,
      "attack.norm": tuple(attacks.NORMS),
      "attack.domain": schema.DOMAINS,
      "train.optimizer": tuple(adversarial_training.OPTIMIZERS),
      "train.schedule": tuple(adversarial_training.SCHEDULES),
      "eval.attacks": tuple(evaluation.ATTACKS),
      "eval.split": schema.EVAL_SPLITS,
  }


class _Checker:
  """Collects `config.<key>=<value>: <what is allowed>` messages."""

  def __init__(self, allowed: dict[str, tuple]):
    self.allowed = allowed
    self.problems: list[str] = []

  def check(self, ok, key, value, allowed):
    if not ok:
      self.problems.append(f"config.{key}={value!r}: {allowed}")

  def one_of(self, key, value, names_key=None):
    allowed = self.allowed[names_key or key]
    self.check(value in allowed, key, value,
               f"must be one of {', '.join(map(repr, allowed))}")

  @staticmethod
  def number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)

  @staticmethod
  def integer(value):
    return isinstance(value, int) and not isinstance(value, bool)

  def positive_int(self, key, value, allow_minus_one=False):
    ok = self.integer(value) and (value >= 1 or (allow_minus_one and value == -1))
    self.check(ok, key, value, "must be an integer >= 1"
               + (" or -1 (all)" if allow_minus_one else ""))

  def non_negative_int(self, key, value, meaning=""):
    self.check(self.integer(value) and value >= 0, key, value,
               "must be an integer >= 0" + meaning)

  def boolean(self, key, value):
    self.check(isinstance(value, bool), key, value, "must be True or False")


def _check_search(v: _Checker, s: dict) -> None:
  density = s["density"]
  v.check(v.number(density) and 0.0 < density <= 1.0, "search.density", density,
          "must be in (0, 1] (the fraction of prunable weights kept)")
  v.one_of("search.estimator", s["estimator"])
  v.non_negative_int("search.epochs", s["epochs"])
  v.positive_int("search.batch_size", s["batch_size"])
  v.non_negative_int("search.num_samples", s["num_samples"],
                     " (0 = the estimator's default)")
  chunk = s["estimator_chunk_size"]
  v.non_negative_int("search.estimator_chunk_size", chunk,
                     " (0 = all probes/directions in one pass)")
  v.check(not chunk or s["estimator"] in v.allowed["search.chunked_estimators"],
          "search.estimator_chunk_size", chunk,
          f"applies to random_projection* and output_probes* only, not "
          f"{s['estimator']!r}; set it to 0")
  # kernel_weight > 0: the "awt_no_kernel" method sets it to 0 itself.
  for key in ("learning_rate", "kernel_weight"):
    v.check(v.number(s[key]) and s[key] > 0, f"search.{key}", s[key], "must be > 0")
  v.check(v.number(s["l2_weight"]) and s["l2_weight"] >= 0, "search.l2_weight",
          s["l2_weight"], "must be >= 0")
  for key in ("kernel_batch", "mask_update_period", "attack_steps",
              "log_every_steps", "kernel_period"):
    v.positive_int(f"search.{key}", s[key])
  for key in ("reduction", "density_schedule", "mask_distribution", "precision"):
    v.one_of(f"search.{key}", s[key])
  v.check(v.number(s["prune_until_fraction"]) and 0 < s["prune_until_fraction"] <= 1,
          "search.prune_until_fraction", s["prune_until_fraction"], "must be in (0, 1]")
  v.check(v.number(s["attack_step_size"]) and s["attack_step_size"] >= 0,
          "search.attack_step_size", s["attack_step_size"], "must be >= 0 (0 = default)")
  v.boolean("search.teacher_cache", s["teacher_cache"])
  v.check(v.number(s["teacher_cache_gb"]) and s["teacher_cache_gb"] > 0,
          "search.teacher_cache_gb", s["teacher_cache_gb"], "must be > 0 (GiB)")


def _check_data(v: _Checker, d: dict) -> None:
  v.one_of("data.name", d["name"])
  v.one_of("data.source", d["source"])
  v.positive_int("data.num_train", d["num_train"], allow_minus_one=True)
  v.positive_int("data.num_test", d["num_test"], allow_minus_one=True)
  held_out = d["validation_examples"]
  v.check(v.integer(held_out) and held_out >= -1, "data.validation_examples",
          held_out, "must be an integer >= 0, or -1 (the data set's standard split)")
  v.check(v.number(d["digits_test_fraction"]) and 0 < d["digits_test_fraction"] < 1,
          "data.digits_test_fraction", d["digits_test_fraction"], "must be in (0, 1)")
  support, dim = d["toy_support"], d["toy_dim"]
  v.check(v.integer(support) and 0 <= support
          and (not isinstance(dim, int) or support <= dim), "data.toy_support",
          support, "must be an integer in [0, data.toy_dim] (0 = all coordinates)")
  if d["name"] in ("image_folder", "idx", "npz") and not d["data_dir"]:
    v.problems.append(
        f"config.data.data_dir='': data.name={d['name']!r} needs data.data_dir "
        "(the folder or file that holds the data)")


def _check_model_and_attack(v: _Checker, m: dict, a: dict) -> None:
  v.one_of("model.name", m["name"])
  v.one_of("model.vgg_norm", m["vgg_norm"])
  v.check(v.number(m["vgg_width"]) and 0 < m["vgg_width"] <= 4, "model.vgg_width",
          m["vgg_width"], "must be in (0, 4] (1.0 = VGG-16's widths)")
  eps = a["epsilon"]
  v.check(v.number(eps) and math.isfinite(eps) and eps >= 0, "attack.epsilon", eps,
          "must be a finite number >= 0 (0 = natural training)")
  v.one_of("attack.norm", a["norm"])
  v.one_of("attack.domain", a["domain"])
  if v.number(eps) and eps > 0:
    v.positive_int("attack.train_steps", a["train_steps"])
    v.check(v.number(a["train_step_size"]) and a["train_step_size"] > 0,
            "attack.train_step_size", a["train_step_size"], "must be > 0")


def _check_train(v: _Checker, t: dict) -> None:
  v.non_negative_int("train.epochs", t["epochs"])
  v.positive_int("train.batch_size", t["batch_size"])
  v.one_of("train.optimizer", t["optimizer"])
  v.one_of("train.schedule", t["schedule"])
  v.check(v.number(t["learning_rate"]) and t["learning_rate"] > 0,
          "train.learning_rate", t["learning_rate"], "must be > 0")
  v.check(v.number(t["weight_decay"]) and t["weight_decay"] >= 0,
          "train.weight_decay", t["weight_decay"], "must be >= 0")
  v.check(v.number(t["momentum"]) and 0 <= t["momentum"] < 1, "train.momentum",
          t["momentum"], "must be in [0, 1)")
  for key in ("warmup_steps", "epsilon_warmup_epochs", "curve_every_epochs"):
    v.non_negative_int(f"train.{key}", t[key])
  for key in ("log_every_steps", "curve_examples", "curve_pgd_steps"):
    v.positive_int(f"train.{key}", t[key])


def _check_eval(v: _Checker, e: dict) -> None:
  names = v.allowed["eval.attacks"]
  attacks = tuple(e["attacks"]) if isinstance(e["attacks"], (list, tuple)) else ()
  v.check(bool(attacks) and all(x in names for x in attacks)
          and len(set(attacks)) == len(attacks), "eval.attacks", e["attacks"],
          f"must be a non-empty tuple of distinct names from "
          f"{', '.join(map(repr, names))}")
  for key in ("pgd_steps", "pgd_restarts", "apgd_steps", "apgd_t_targets",
              "square_queries", "batch_size"):
    v.positive_int(f"eval.{key}", e[key])
  v.positive_int("eval.num_examples", e["num_examples"], allow_minus_one=True)
  v.check(v.number(e["step_size"]) and (e["step_size"] > 0 or e["step_size"] == -1),
          "eval.step_size", e["step_size"], "must be > 0 or -1 (default)")
  v.boolean("eval.validation", e["validation"])
  v.one_of("eval.split", e["split"])


def _check_run(v: _Checker, c: dict, implemented_methods) -> None:
  v.check(v.integer(c["seed"]), "seed", c["seed"], "must be an integer")
  budget = c["time_budget_s"]
  v.check(v.number(budget) and budget >= 0, "time_budget_s", budget,
          "must be a number of seconds >= 0 (0 = no budget)")
  v.positive_int("checkpoint.every_steps", c["checkpoint"]["every_steps"])
  v.positive_int("checkpoint.keep", c["checkpoint"]["keep"])
  phases = c["phases"]
  if not isinstance(phases, (list, tuple)) or any(p not in schema.PHASES
                                                  for p in phases):
    v.problems.append(f"config.phases={phases!r}: must be a tuple of "
                      f"{', '.join(map(repr, schema.PHASES))}")
  methods = c["methods"]
  known = tuple(implemented_methods or ())
  if not isinstance(methods, (list, tuple)) or not methods:
    v.problems.append(f"config.methods={methods!r}: must be a non-empty tuple")
    return
  for method in methods:
    if known and method not in known:
      v.problems.append(f"config.methods: {method!r} is not available; "
                        f"must be among {', '.join(map(repr, known))}")
  if len(set(methods)) != len(methods):
    v.problems.append(f"config.methods={methods!r}: lists a method twice")


def validate(config, *, implemented_methods=None) -> None:
  """Raises `ConfigError` listing every problem with `config`; else returns."""
  c = _as_dict(config)
  ref = schema.get_config().to_dict()
  problems = unknown_keys(c, ref) + missing_keys(c, ref)
  if problems:
    raise ConfigError(_format(problems))
  v = _Checker(allowed_values())
  _check_search(v, c["search"])
  _check_data(v, c["data"])
  _check_model_and_attack(v, c["model"], c["attack"])
  _check_train(v, c["train"])
  _check_eval(v, c["eval"])
  v.check(not (c["eval"]["split"] == "validation" and c["data"]["validation_examples"] == 0),
          "eval.split", c["eval"]["split"],
          "needs a validation split, but data.validation_examples is 0: set it to "
          "-1 (the data set's standard split) or a number of held-out examples")
  _check_run(v, c, implemented_methods)
  if v.problems:
    raise ConfigError(_format(v.problems))


def _format(problems: list[str]) -> str:
  return "invalid config:\n  " + "\n  ".join(problems)
