"""Config files load and validate; bad configs fail cleanly from the real entry point."""
import glob
import os
import subprocess
import sys

import pytest

from scalable_awt import config_schema
from scalable_awt import config_validation as cv
from scalable_awt import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path, arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, "smoke", "cheap,smoke"])
def test_every_config_validates(path, arg):
  config = _load(path, arg)
  cv.validate(config, implemented_methods=tuple(train.MASK_FNS))
  doc = open(path).read()
  for word in ("Command", "Time", "Expected"):
    assert word in doc, f"{path} docstring lacks {word}"


def test_required_keys_exist():
  c = config_schema.get_config()
  for key in ("search.density", "search.estimator", "data.name",
              "data.data_dir", "attack.epsilon"):
    node = c
    for part in key.split("."):
      node = node[part]


def test_unknown_config_argument():
  with pytest.raises(ValueError, match="smoke"):
    _load(CONFIGS[0], "smok")


def test_cheap_word_sets_the_search_vgg16_runs_by_default():
  cheap = _load(os.path.join(ROOT, "configs", "mlp_mnist.py"), "cheap")
  vgg = _load(os.path.join(ROOT, "configs", "vgg16_cifar10.py"))
  for config in (cheap, vgg):
    assert {k: config.search[k] for k in config_schema.CHEAP_SEARCH} == (
        config_schema.CHEAP_SEARCH)
  # Without the word, the exact search every step (the validation reference).
  plain = _load(os.path.join(ROOT, "configs", "mlp_mnist.py"))
  assert (plain.search.estimator, plain.search.kernel_period) == ("exact", 1)


@pytest.mark.parametrize("key,value,needle", [
    ("search.density", 0.0, "(0, 1]"),
    ("search.density", 1.5, "(0, 1]"),
    ("attack.epsilon", -0.1, ">= 0"),
    ("search.estimator", "magic", "'exact', 'diagonal'"),
    ("data.name", "imagenet", "'mnist', 'cifar10'"),
    ("train.epsilon_warmup_epochs", -1, ">= 0"),
    ("search.estimator_chunk_size", -2, ">= 0"),
    # The default estimator is "exact", which has no chunks.
    ("search.estimator_chunk_size", 2, "output_probes* only"),
])
def test_validate_messages(key, value, needle):
  c = config_schema.get_config()
  group, name = key.split(".")
  c[group][name] = value
  with pytest.raises(cv.ConfigError) as e:
    cv.validate(c)
  assert f"config.{key}" in str(e.value) and needle in str(e.value)


def test_unknown_key_in_config_file():
  c = config_schema.get_config()
  c.search.dnsity = 0.5
  with pytest.raises(cv.ConfigError, match=r"config.search.dnsity: unknown key.*density"):
    cv.validate(c)


def test_unknown_method():
  c = config_schema.get_config()
  c.methods = ("dense", "hydra")
  with pytest.raises(cv.ConfigError, match="'hydra' is not available.*'awt'"):
    cv.validate(c, implemented_methods=tuple(train.MASK_FNS))


def _main(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
      [sys.executable, "-m", "scalable_awt.main", *args], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override,needle", [
    ("--config.search.density=0", "config.search.density=0.0: must be in (0, 1]"),
    ("--config.search.density=1.5", "config.search.density=1.5: must be in (0, 1]"),
    ("--config.attack.epsilon=-0.5", "config.attack.epsilon=-0.5: must be a finite number >= 0"),
    ("--config.search.estimator=magic", "config.search.estimator='magic': must be one of 'exact', 'diagonal', 'block_diagonal', 'random_projection', 'random_projection_unbiased', 'output_probes', 'output_probes_deflated'"),
    ("--config.data.name=imagenet", "config.data.name='imagenet': must be one of"),
    # main.py may add a "did you mean" hint between the two parts.
    ("--config.search.dnsity=0.5", ("--config.search.dnsity: unknown key",
                                    "keys of config.search are: attack_step_size, attack_steps, batch_size, density")),
])
def test_entry_point_rejects_bad_config(tmp_path, override, needle):
  out = _main("--config", "configs/toy_gaussian.py:smoke", "--workdir",
              str(tmp_path / "w"), override)
  assert out.returncode == 2, out.stderr[-2000:]
  for part in (needle,) if isinstance(needle, str) else needle:
    assert part in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "w").exists()  # Nothing was started.


def test_allowed_names_come_from_the_implementing_modules():
  from scalable_awt import estimators, evaluation, masks, ticket_search
  allowed = cv.allowed_values()
  assert allowed["search.estimator"] == tuple(estimators.NAMES)
  assert allowed["search.mask_distribution"] == tuple(masks.DISTRIBUTIONS)
  assert allowed["search.density_schedule"] == tuple(ticket_search.DENSITY_SCHEDULES)
  assert allowed["eval.attacks"] == tuple(evaluation.ATTACKS)
  for name in estimators.CHUNKED:  # The option the config passes on exists.
    assert estimators.get_estimator(name, chunk_size=2).chunk_size == 2


def test_schema_models_match_the_model_registry():
  from scalable_awt import models
  assert set(config_schema.MODELS) == set(models._MODELS) | {"linear"}


@pytest.mark.parametrize("key,value,needle", [
    ("search.kernel_period", 0, "integer >= 1"),
    ("search.teacher_cache", 1, "True or False"),
    ("search.teacher_cache_gb", 0.0, "> 0"),
    ("search.precision", "float16", "'float32', 'bfloat16'"),
    ("data.validation_examples", -2, "-1 (the data set's standard split)"),
    ("eval.square_queries", 0, "integer >= 1"),
    ("eval.apgd_t_targets", 0, "integer >= 1"),
    ("eval.validation", "yes", "True or False"),
    ("eval.attacks", ("pgd", "deepfool"), "distinct names from 'pgd'"),
])
def test_validate_new_keys(key, value, needle):
  c = config_schema.get_config().to_dict()  # A dict: no ConfigDict type lock.
  group, name = key.split(".")
  c[group][name] = value
  with pytest.raises(cv.ConfigError) as e:
    cv.validate(c)
  assert f"config.{key}" in str(e.value) and needle in str(e.value)


def test_defaults_of_new_keys():
  c = config_schema.get_config()
  assert tuple(c.eval.attacks) == ("pgd", "apgd_ce")
  assert c.data.validation_examples == -1 and c.eval.validation is True
  assert (c.search.kernel_period, c.search.teacher_cache, c.search.precision) == (
      1, False, "float32")
