"""`benchmarks/seeds.py`: spread over seeds and the paired AWT − random comparison."""
import importlib.util
import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def seeds():
  spec = importlib.util.spec_from_file_location(
      "seeds", os.path.join(ROOT, "benchmarks", "seeds.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules["seeds"] = module
  spec.loader.exec_module(module)
  yield module
  del sys.modules["seeds"]


def _row(method, density, natural, pgd):
  return {"method": method, "density": density, "target_density": density,
          "natural_accuracy": natural, "robust_accuracy": {"pgd100": pgd}}


def _write(directory, name, seed, awt_pgd, random_pgd, overrides=("train.epochs=10",),
           complete=True):
  seed_override = [] if seed is None else [f"seed={seed}"]
  result = {"preset": "table1", "config_file": "mlp_mnist.py",
            "overrides": [*overrides, *seed_override], "complete": complete,
            "schedule": {"search_epochs": 2.0, "train_epochs": 10.0},
            "rows": [_row("dense", 1.0, 0.9, 0.5), _row("awt", 0.1, 0.8, awt_pgd),
                     _row("random", 0.1, 0.7, random_pgd)]}
  (directory / f"{name}.json").write_text(json.dumps(result))


def test_mean_std_and_paired_t_test_match_closed_forms(seeds, tmp_path):
  # AWT − random = +0.01, +0.03, +0.02 on seeds 0, 1, 2: mean 0.02, std 0.01.
  _write(tmp_path, "s0", None, 0.51, 0.50)  # No override: the default seed, 0.
  _write(tmp_path, "s1", 1, 0.43, 0.40)
  _write(tmp_path, "s2", 2, 0.47, 0.45)
  result = seeds.aggregate(seeds.load(["s0", "s1", "s2"], tmp_path))
  assert result["seeds"] == [0, 1, 2]
  awt = next(r for r in result["rows"] if r["method"] == "awt")
  assert awt["n"] == 3 and awt["seeds"] == [0, 1, 2]
  assert awt["robust_accuracy"]["pgd100"]["mean"] == pytest.approx(0.47)
  assert awt["robust_accuracy"]["pgd100"]["std"] == pytest.approx(0.04)  # sample std, n − 1
  assert awt["robust_accuracy"]["pgd100"]["stderr"] == pytest.approx(0.04 / math.sqrt(3))
  assert awt["natural_accuracy"] == {"mean": pytest.approx(0.8), "std": 0.0, "stderr": 0.0,
                                     "values": [0.8, 0.8, 0.8]}
  assert "pgd_minus_worst_case" not in awt  # PGD alone: no suite to compare with.
  pgd = next(p for p in result["paired"] if p["metric"] == "pgd100")
  assert pgd["differences"] == pytest.approx([0.01, 0.03, 0.02])
  assert pgd["mean"] == pytest.approx(0.02) and pgd["std"] == pytest.approx(0.01)
  assert pgd["awt_ahead"] == 3 and pgd["stderr"] == pytest.approx(0.01 / math.sqrt(3))
  t = 0.02 / (0.01 / math.sqrt(3))
  assert pgd["t"] == pytest.approx(t)
  # Student's t with 2 degrees of freedom: two-sided p = 1 − t / sqrt(t² + 2).
  assert pgd["p_value"] == pytest.approx(1 - t / math.sqrt(t * t + 2))
  natural = next(p for p in result["paired"] if p["metric"] == "natural")
  assert natural["differences"] == pytest.approx([0.1] * 3) and natural["awt_ahead"] == 3
  assert "p_value" not in natural  # Zero spread: no test to run.
  text = seeds.markdown(result)
  assert "| awt | 10.0% | 3 | 80.00 ± 0.00 | 47.00 ± 2.31 |" in text  # std 4.00 / sqrt(3)
  assert "| 10.0% | pgd100 | +1.0, +3.0, +2.0 | +2.0 ± 0.6 | 3/3 | 0.074 |" in text


def test_only_the_seed_may_differ(seeds, tmp_path):
  _write(tmp_path, "a", 0, 0.5, 0.5)
  _write(tmp_path, "b", 1, 0.5, 0.5, overrides=("train.epochs=30",))
  with pytest.raises(SystemExit, match=r"overrides differ.*train.epochs=30"):
    seeds.load(["a", "b"], tmp_path)
  _write(tmp_path, "c", None, 0.5, 0.5)  # The default seed is 0, like "a".
  with pytest.raises(SystemExit, match=r"seeds \[0, 0\] repeat"):
    seeds.load(["a", "c"], tmp_path)
  _write(tmp_path, "d", 3, 0.5, 0.5, complete=False)
  with pytest.raises(SystemExit, match="has not finished"):
    seeds.load(["a", "d"], tmp_path)
  with pytest.raises(SystemExit, match="no such sweep result.*--name missing"):
    seeds.load(["a", "missing"], tmp_path)


def test_main_writes_json_markdown_and_plot(seeds, tmp_path, monkeypatch):
  monkeypatch.setattr(seeds, "RESULTS", tmp_path)
  _write(tmp_path, "s0", 0, 0.51, 0.50)
  _write(tmp_path, "s1", 1, 0.43, 0.40)
  assert seeds.main(["s0", "s1", "--name", "both"]) == 0
  result = json.loads((tmp_path / "both.json").read_text())
  assert result["inputs"] == ["s0", "s1"] and result["overrides"] == ["train.epochs=10"]
  report = (tmp_path / "both.md").read_text()
  assert report.startswith("Mean ± standard error over seeds [0, 1]")
  # The table quotes the standard error (std / sqrt(n)), not the std.
  awt = next(r for r in result["rows"] if r["method"] == "awt")
  pgd = awt["robust_accuracy"]["pgd100"]
  assert pgd["stderr"] == pytest.approx(pgd["std"] / 2 ** 0.5) and pgd["stderr"] > 0
  assert f"{100 * pgd['mean']:.2f} ± {100 * pgd['stderr']:.2f}" in report
  assert (tmp_path / "both.png").stat().st_size > 0
  with pytest.raises(SystemExit, match="at least two sweeps"):
    seeds.main(["s0", "--name", "one"])


def test_curve_gaps_are_paired_over_the_seeds_that_have_them(seeds, tmp_path):
  for name, seed, gaps in (("g0", 0, (0.10, 0.30)), ("g1", 1, (0.20, 0.25)), ("g2", 2, None)):
    _write(tmp_path, name, seed, 0.5, 0.5)
    if gaps is not None:  # A sweep without a dense row has no curve gaps.
      result = json.loads((tmp_path / f"{name}.json").read_text())
      result["curve_gaps"] = [
          {"method": m, "target_density": 0.1, "natural_gap": g, "robust_gap": 2 * g}
          for m, g in zip(("awt", "random"), gaps)]
      (tmp_path / f"{name}.json").write_text(json.dumps(result))
  result = seeds.aggregate(seeds.load(["g0", "g1", "g2"], tmp_path))
  natural = next(p for p in result["curve_paired"] if p["metric"] == "natural_gap")
  assert natural["seeds"] == [0, 1]
  assert natural["differences"] == pytest.approx([-0.20, -0.05])
  assert natural["awt_ahead"] == 0  # AWT's curve is the closer one on both seeds.
  robust = next(p for p in result["curve_paired"] if p["metric"] == "robust_gap")
  assert robust["mean"] == pytest.approx(2 * (-0.125))
  assert "| 10.0% | natural_gap | -20.0, -5.0 | -12.5 ± 7.5 | 0/2 |" in seeds.markdown(result)


def test_awt_is_paired_with_every_baseline_and_the_threat_model_is_stated(seeds, tmp_path):
  tm = {"norm": "linf", "epsilon": 0.3, "units": "pixels",
        "attacks": [{"name": "pgd", "steps": 100, "restarts": 5}]}
  for seed, (awt, ablation, rnd) in enumerate(((0.60, 0.55, 0.50), (0.62, 0.60, 0.50))):
    result = {"preset": "p", "config_file": "c.py", "overrides": [f"seed={seed}"],
              "threat_model": tm, "rows": [_row("awt", 0.1, 0.8, awt),
                                           _row("awt_no_kernel", 0.1, 0.8, ablation),
                                           _row("random", 0.1, 0.7, rnd)]}
    (tmp_path / f"s{seed}.json").write_text(json.dumps(result))
  sweeps = seeds.load(["s0", "s1"], tmp_path)
  result = dict(seeds.aggregate(sweeps), threat_model=seeds.threat_model_of(sweeps[0]))
  pgd = {p["baseline"]: p for p in result["paired"] if p["metric"] == "pgd100"}
  assert [p["baseline"] for p in result["paired"] if p["metric"] == "pgd100"] == [
      "random", "awt_no_kernel"]  # Random first, then the ablations.
  assert pgd["random"]["differences"] == pytest.approx([0.10, 0.12])
  assert pgd["awt_no_kernel"]["differences"] == pytest.approx([0.05, 0.02])
  text = seeds.markdown(result)
  assert text.startswith("Threat model: L∞ ε = 0.3 (pixels); PGD-100 ×5 restarts.")
  assert "| 10.0% | pgd100, awt − awt_no_kernel | +5.0, +2.0 | +3.5 ± 1.5 | 2/2 |" in text


def test_a_scalable_search_is_also_paired_with_the_exact_one(seeds, tmp_path):
  for seed, (exact, cheap, rnd) in enumerate(((0.60, 0.58, 0.50), (0.62, 0.63, 0.50))):
    result = {"preset": "p", "config_file": "c.py", "overrides": [f"seed={seed}"],
              "rows": [_row("awt", 0.1, 0.8, exact), _row("awt[cheap]", 0.1, 0.8, cheap),
                       _row("random", 0.1, 0.7, rnd)]}
    (tmp_path / f"s{seed}.json").write_text(json.dumps(result))
  result = seeds.aggregate(seeds.load(["s0", "s1"], tmp_path))
  pgd = [(p["method"], p["baseline"], p["differences"]) for p in result["paired"]
         if p["metric"] == "pgd100"]
  assert [(m, b) for m, b, _ in pgd] == [
      ("awt", "random"), ("awt[cheap]", "random"), ("awt[cheap]", "awt")]
  assert pgd[-1][2] == pytest.approx([-0.02, 0.01])  # cheap − exact, per seed.


def test_the_gap_between_pgd_and_the_worst_case_is_reported_per_ticket(seeds, tmp_path):
  # PGD-100 − worst case = 0.02, 0.04, 0.03 on seeds 0, 1, 2: mean 0.03, s.e. 0.01 / sqrt(3).
  for seed, (pgd, worst) in enumerate([(0.50, 0.48), (0.40, 0.36), (0.45, 0.42)]):
    row = _row("awt", 0.1, 0.8, pgd)
    row["robust_accuracy"].update(square=worst + 0.01, worst_case=worst)
    (tmp_path / f"g{seed}.json").write_text(json.dumps(
        {"preset": "table1", "config_file": "mlp_mnist.py", "overrides": [f"seed={seed}"],
         "rows": [row]}))
  result = seeds.aggregate(seeds.load(["g0", "g1", "g2"], tmp_path))
  gap = result["rows"][0]["pgd_minus_worst_case"]
  assert gap["attack"] == "pgd100" and gap["values"] == pytest.approx([0.02, 0.04, 0.03])
  assert gap["mean"] == pytest.approx(0.03) and gap["stderr"] == pytest.approx(0.01 / math.sqrt(3))
  assert "| awt | 10.0% | 42.00 ± 3.46 | 3.00 ± 0.58 |" in seeds.markdown(result)
