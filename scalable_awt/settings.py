"""The run's settings, resolved and validated once from the config.

`resolve(config)` validates the config (`config_validation.validate`) and
turns it into frozen dataclasses, one per concern: `ModelSettings`,
`AttackSettings`, `SearchSettings`, `TrainSettings`, `EvalSettings`,
`CheckpointSettings`, gathered in `Settings`. Everything downstream reads
these objects, never the config: each value is read here, once, with its
type. Defaults and their meaning live in `config_schema.py`; the allowed
names live in the modules that implement them (see `config_validation`).

The data group stays a `ConfigDict` (`Settings.data`): `data.load` owns the
meaning of its keys.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from scalable_awt import config_validation


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """`config.model`: which network, and its widths."""
  name: str
  mlp_features: tuple[int, ...]
  cnn_conv_features: tuple[int, ...]
  cnn_dense_features: int
  vgg_norm: str
  vgg_width: float
  vgg_classifier_features: tuple[int, ...]

  def build(self, num_classes: int):
    """The Flax module for `num_classes` outputs."""
    from scalable_awt import models
    if self.name == "linear":
      from scalable_awt.gaussian_toy import LinearClassifier
      if num_classes != 2:
        raise ValueError("model.name='linear' is the two-class toy classifier.")
      return LinearClassifier()
    kwargs = {"mlp": dict(features=self.mlp_features),
              "cnn": dict(conv_features=self.cnn_conv_features,
                          dense_features=self.cnn_dense_features),
              "vgg16": dict(norm=self.vgg_norm, width=self.vgg_width,
                            classifier_features=self.vgg_classifier_features),
              }[self.name]
    return models.create_model(self.name, num_classes=num_classes, **kwargs)


@dataclasses.dataclass(frozen=True)
class AttackSettings:
  """`config.attack`: the threat model of training and evaluation."""
  epsilon: float
  norm: str
  train_steps: int
  train_step_size: float
  random_start: bool
  domain: str  # "auto", "unit" or "none"; `box` resolves it.

  def box(self, dataset_domain) -> tuple[float, float] | None:
    """The input box of the attacks: the data's for "auto"."""
    if self.domain == "auto":
      return tuple(dataset_domain) if dataset_domain else None
    return (0.0, 1.0) if self.domain == "unit" else None


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  """`config.search`: the ticket search (AWT/NTT) and the mask baselines."""
  density: float
  estimator: str
  num_samples: int | None  # None: the estimator's default.
  estimator_chunk_size: int
  epochs: float
  batch_size: int
  learning_rate: float
  kernel_weight: float
  l2_weight: float
  kernel_batch: int
  reduction: str
  mask_update_period: int
  density_schedule: str
  prune_until_fraction: float
  mask_distribution: str
  attack_steps: int
  attack_step_size: float  # 0: 2.5 * epsilon / attack_steps.
  log_every_steps: int
  kernel_period: int
  teacher_cache: bool
  teacher_cache_gb: float
  precision: str

  def total_steps(self, num_train: int) -> int:
    from scalable_awt import data as data_lib
    per_epoch = data_lib.steps_per_epoch(num_train, self.batch_size)
    return max(1, int(round(self.epochs * per_epoch)))

  def for_search(self, *, epsilon: float, kernel_weight: float,
                 total_steps: int, norm: str, domain):
    """The pure layer's `ticket_search.SearchSettings` for one searched method."""
    from scalable_awt import ticket_search
    step_size = (self.attack_step_size if self.attack_step_size else
                 2.5 * float(epsilon) / max(self.attack_steps, 1))
    return ticket_search.SearchSettings(
        density=self.density, estimator=self.estimator,
        num_samples=self.num_samples,
        estimator_chunk_size=self.estimator_chunk_size,
        kernel_weight=float(kernel_weight), l2_weight=self.l2_weight,
        kernel_batch=self.kernel_batch, reduction=self.reduction,
        mask_update_period=self.mask_update_period,
        density_schedule=self.density_schedule,
        prune_until_fraction=self.prune_until_fraction, total_steps=total_steps,
        mask_distribution=self.mask_distribution, epsilon=float(epsilon),
        attack_step_size=float(step_size), attack_steps=self.attack_steps,
        norm=norm, domain=None if domain is None else tuple(domain),
        kernel_period=self.kernel_period, teacher_cache=self.teacher_cache,
        teacher_cache_gb=self.teacher_cache_gb, precision=self.precision)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """`config.train`: adversarial training of every ticket."""
  epochs: int
  batch_size: int
  optimizer: str
  learning_rate: float
  schedule: str
  warmup_steps: int
  epsilon_warmup_epochs: int
  weight_decay: float
  momentum: float
  log_every_steps: int
  curve_every_epochs: int
  curve_examples: int
  curve_pgd_steps: int

  def steps(self, num_train: int) -> tuple[int, int]:
    """`(steps_per_epoch, total_steps)` on `num_train` examples."""
    from scalable_awt import data as data_lib
    per_epoch = data_lib.steps_per_epoch(num_train, self.batch_size)
    return per_epoch, per_epoch * self.epochs

  def make_optimizer(self, total_steps: int):
    from scalable_awt import adversarial_training as at
    total = max(total_steps, 1)
    return at.make_optimizer(
        name=self.optimizer, learning_rate=self.learning_rate,
        schedule=self.schedule, total_steps=total,
        warmup_steps=min(self.warmup_steps, total),
        weight_decay=self.weight_decay, momentum=self.momentum)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """`config.eval`: the final evaluation's attack suite."""
  attacks: tuple[str, ...]
  pgd_steps: int
  pgd_restarts: int
  apgd_steps: int
  apgd_t_targets: int
  square_queries: int
  step_size: float | None  # None: 2.5 * epsilon / pgd_steps.
  batch_size: int
  num_examples: int | None  # None: every example.
  validation: bool
  split: str  # "test" or "validation": where the suite runs and what rows report.


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
  every_steps: int
  keep: int


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything a run reads, resolved once (see the module docstring)."""
  seed: int
  methods: tuple[str, ...]
  phases: tuple[str, ...]
  time_budget_s: float  # 0 = none (budget.Budget).
  data: Any  # The `config.data` group (a locked copy), read by `data.load`.
  model: ModelSettings
  attack: AttackSettings
  search: SearchSettings
  train: TrainSettings
  eval: EvalSettings
  checkpoint: CheckpointSettings
  # The resolved config as plain JSON: provenance in config.json and
  # results.json, and the resume guard's reference.
  config_json: dict = dataclasses.field(repr=False, compare=False)


def _fields(cls, group, **overrides):
  """`cls(**group)` over `cls`'s fields, with `overrides` for converted ones."""
  values = {f.name: group[f.name] for f in dataclasses.fields(cls)}
  values.update(overrides)
  return cls(**values)


def resolve(config, *, implemented_methods=None) -> Settings:
  """Validates `config` (raising `ConfigError`) and returns its `Settings`."""
  if implemented_methods is None:
    from scalable_awt import tickets
    implemented_methods = tuple(tickets.MASK_FNS)
  config_validation.validate(config, implemented_methods=implemented_methods)
  c = config
  m, s, t, e = c.model, c.search, c.train, c.eval
  return Settings(
      seed=int(c.seed), methods=tuple(c.methods), phases=tuple(c.phases),
      time_budget_s=float(c.time_budget_s),
      data=ml_collections.FrozenConfigDict(c.data),
      model=_fields(ModelSettings, m, mlp_features=tuple(m.mlp_features),
                    cnn_conv_features=tuple(m.cnn_conv_features),
                    cnn_dense_features=int(m.cnn_dense_features),
                    vgg_width=float(m.vgg_width),
                    vgg_classifier_features=tuple(m.vgg_classifier_features)),
      attack=_fields(AttackSettings, c.attack,
                     epsilon=float(c.attack.epsilon),
                     train_step_size=float(c.attack.train_step_size)),
      search=_fields(SearchSettings, s, density=float(s.density),
                     num_samples=int(s.num_samples) or None,
                     epochs=float(s.epochs),
                     learning_rate=float(s.learning_rate),
                     kernel_weight=float(s.kernel_weight),
                     l2_weight=float(s.l2_weight),
                     prune_until_fraction=float(s.prune_until_fraction),
                     attack_step_size=float(s.attack_step_size),
                     teacher_cache_gb=float(s.teacher_cache_gb)),
      train=_fields(TrainSettings, t, learning_rate=float(t.learning_rate),
                    weight_decay=float(t.weight_decay),
                    momentum=float(t.momentum)),
      eval=_fields(EvalSettings, e, attacks=tuple(e.attacks),
                   step_size=None if e.step_size < 0 else float(e.step_size),
                   num_examples=None if e.num_examples < 0 else int(e.num_examples)),
      checkpoint=_fields(CheckpointSettings, c.checkpoint),
      config_json=json.loads(c.to_json_best_effort()))


def of(config_or_settings) -> Settings:
  """`Settings` from either a config or settings (for callers holding a config)."""
  if isinstance(config_or_settings, Settings):
    return config_or_settings
  return resolve(config_or_settings)


def from_saved(config_json: dict) -> Settings:
  """`Settings` of a workdir's config.json, keys added since taking defaults."""
  from scalable_awt import config_schema

  def merge(node, saved):
    for key, value in saved.items():
      if isinstance(value, dict) and key in node:
        merge(node[key], value)
      else:
        node[key] = value
  config = config_schema.get_config()
  with config.unlocked():
    merge(config, config_json)
  return resolve(config)
