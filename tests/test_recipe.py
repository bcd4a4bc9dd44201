"""`benchmarks/recipe.py`: recipe studies on the validation split, never the test set."""
import importlib.util
import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def recipe():
  benchmarks = os.path.join(ROOT, "benchmarks")
  sys.path.insert(0, benchmarks)  # recipe.py imports sweep.py beside it.
  spec = importlib.util.spec_from_file_location("recipe", os.path.join(benchmarks, "recipe.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  yield module
  sys.path.remove(benchmarks)


def _row(variant, method, seed, natural, worst):
  return {"variant": variant, "method": method, "seed": seed, "natural_accuracy": natural,
          "robust_accuracy": {"pgd100": worst + 0.05, "worst_case": worst}}


def test_the_variant_with_the_best_mean_of_the_selected_methods_is_chosen(recipe):
  rows = [_row("a", "awt", 0, 0.9, 0.40), _row("a", "awt", 1, 0.9, 0.44),
          _row("a", "random", 0, 0.8, 0.30), _row("a", "random", 1, 0.8, 0.30),
          _row("b", "awt", 0, 0.9, 0.38), _row("b", "awt", 1, 0.9, 0.38),
          _row("b", "random", 0, 0.8, 0.40), _row("b", "random", 1, 0.8, 0.40)]
  summary, chosen = recipe.summarise(rows, [])
  # Mean over both methods: a (0.42 + 0.30) / 2 = 0.36 < b (0.38 + 0.40) / 2 = 0.39.
  assert chosen == "b"
  a_awt = next(e for e in summary if (e["variant"], e["method"]) == ("a", "awt"))
  assert a_awt["attack"] == "worst_case" and a_awt["robust_accuracy"]["mean"] == pytest.approx(0.42)
  assert a_awt["robust_accuracy"]["stderr"] == pytest.approx(math.sqrt(0.0008) / math.sqrt(2))
  assert a_awt["selection_score"] == pytest.approx(0.36)
  # Selecting on AWT alone picks the other variant.
  assert recipe.summarise(rows, ["awt"])[1] == "a"


def test_a_study_runs_every_variant_on_the_validation_split_only(
    recipe, tmp_path, evaluated_sizes):
  sizes = evaluated_sizes
  out = tmp_path / "results"
  common = ["--set", "data.num_train=256", "--set", "data.num_test=64",
            "--set", "data.validation_examples=100", "--set", "train.epochs=1",
            "--set", "train.curve_every_epochs=0", "--set", "attack.train_steps=1",
            "--set", "eval.pgd_steps=2", "--set", "eval.attacks=('pgd',)"]
  argv = ["--config", "mlp_digits.py", "--density", "0.3", "--methods", "random",
          "--seeds", "0", "--name", "study", "--out", str(out), "--runs", str(tmp_path / "runs"),
          *common, "--variant", "fast", "train.learning_rate=0.01",
          "--variant", "slow", "train.learning_rate=0.0001"]
  assert recipe.main(argv) == 0
  result = json.loads((out / "study.json").read_text())
  assert sizes == [100, 100]  # One evaluation per variant, each of the 100 held-out images.
  assert [(r["variant"], r["split"]) for r in result["rows"]] == [
      ("fast", "validation"), ("slow", "validation")]
  scores = {e["variant"]: e["robust_accuracy"]["mean"] for e in result["summary"]}
  assert result["chosen"] == max(scores, key=scores.get)
  text = (out / "study.md").read_text()
  assert text.startswith("Evaluated on the **validation split** only")
  assert f"| {result['chosen']} **(chosen)** |" in text
  assert (out / "study.png").stat().st_size > 0


@pytest.mark.parametrize("extra, message", [
    (["--variant", "only", "seed=1"], "two variants at least"),
    (["--variant", "a", "seed=1", "--variant", "b", "eval.split=test"], "always evaluates"),
    (["--variant", "a", "--variant", "b", "--select", "awt"], "not among --methods"),
    (["--variant", "a=1", "--variant", "b"], "give the variant a name first"),
])
def test_a_study_that_could_touch_the_test_set_or_choose_nothing_is_refused(
    recipe, tmp_path, extra, message):
  argv = ["--config", "mlp_digits.py", "--density", "0.3", "--methods", "random",
          "--name", "x", "--out", str(tmp_path), *extra]
  with pytest.raises(SystemExit, match=message):
    recipe.main(argv)
  assert not list(tmp_path.iterdir())  # Nothing written.
