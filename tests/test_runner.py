"""The runner end to end on the Gaussian toy: validation rows, threat model, load_trained."""
import json

import numpy as np
import pytest

import scalable_awt
from scalable_awt import config_schema
from scalable_awt import train


def _toy():
  c = config_schema.apply_smoke(config_schema.get_config())
  c.data.name = "gaussian_toy"
  c.data.toy_dim = 20
  c.data.validation_examples = 64
  c.model.name = "linear"
  c.attack.domain = "none"
  c.attack.norm = "l2"
  c.attack.epsilon = 1.0
  c.attack.train_step_size = 0.5
  c.train.epochs = 1
  c.eval.attacks = ("pgd",)
  c.methods = ("dense", "random")
  c.search.density = 0.5
  return c


def test_rows_carry_threat_model_and_validation_and_load_trained_picks_a_ticket(tmp_path):
  res = train.train_and_evaluate(_toy(), str(tmp_path))
  for name, row in res["models"].items():
    assert row["threat_model"]["norm"] == "l2" and row["threat_model"]["epsilon"] == 1.0
    assert [a["name"] for a in row["threat_model"]["attacks"]] == ["pgd"]
    assert row["robust_accuracy_all_attacks"] <= min(row["robust_accuracy"].values())
    val = row["validation"]
    assert val["num_examples"] == 64 and set(val["robust_accuracy"]) == {"pgd5"}
    assert 0 <= val["natural_accuracy"] <= 1
  assert res["dataset"]["num_validation"] == 64
  cached = json.load(open(tmp_path / "eval" / "random.json"))
  assert cached["validation"]["num_examples"] == 64
  # The default is a ticket (no AWT here: the random one), not the dense model.
  _, params = scalable_awt.load_trained(str(tmp_path))
  assert np.mean(np.asarray(params["Dense_0"]["kernel"]) != 0) == pytest.approx(0.5)
  with pytest.raises(ValueError, match=r"No trained model 'awt'.*available: \['dense', 'random'\]"):
    scalable_awt.load_trained(str(tmp_path), "awt")


def test_no_validation_rows_when_switched_off(tmp_path):
  c = _toy()
  c.methods = ("dense",)
  c.eval.validation = False
  res = train.train_and_evaluate(c, str(tmp_path))
  assert "validation" not in res["models"]["dense"]


def test_recipe_study_reports_the_validation_split_and_never_evaluates_test(
    tmp_path, request):
  from scalable_awt import config_validation
  c = _toy()
  c.methods = ("random",)
  reference = train.train_and_evaluate(c, str(tmp_path / "test_split"))["models"]["random"]
  sizes = request.getfixturevalue("evaluated_sizes")  # From here on.
  c.eval.split = "validation"
  res = train.train_and_evaluate(c, str(tmp_path / "validation_split"))
  row = res["models"]["random"]
  # Only the 64 held-out examples were attacked: the test set was not touched.
  assert sizes == [64]
  assert row["split"] == "validation" and row["num_examples"] == 64
  assert "validation" not in row
  # Same model, same key, same split: exactly the test run's validation check.
  assert reference["split"] == "test"
  assert row["natural_accuracy"] == reference["validation"]["natural_accuracy"]
  assert row["robust_accuracy"] == reference["validation"]["robust_accuracy"]
  assert (tmp_path / "validation_split" / "eval" / "random.validation.json").exists()
  assert not (tmp_path / "validation_split" / "eval" / "random.json").exists()
  c.data.validation_examples = 0
  with pytest.raises(config_validation.ConfigError, match=r"eval\.split.*validation_examples"):
    train.train_and_evaluate(c, str(tmp_path / "no_split"))
  # A data set whose standard split is empty is refused before any training.
  c.data.validation_examples = -1
  with pytest.raises(config_validation.ConfigError, match=r"no validation split here"):
    train.train_and_evaluate(c, str(tmp_path / "standard_empty"))
  assert not (tmp_path / "standard_empty" / "checkpoints" / "train").exists()
