"""End to end through `train_and_evaluate` and the real entry point."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import scalable_awt
from scalable_awt import config_schema
from scalable_awt import config_validation
from scalable_awt import main
from scalable_awt import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy():
  c = config_schema.apply_smoke(config_schema.get_config())
  c.data.name = "gaussian_toy"
  c.data.toy_dim = 20
  c.model.name = "linear"
  c.attack.domain = "none"
  c.attack.norm = "l2"
  c.attack.epsilon = 1.0
  c.attack.train_step_size = 0.5
  c.methods = ("dense", "random")
  c.search.density = 0.5
  return c


def test_run_resume_and_load(tmp_path):
  c = _toy()
  res = train.train_and_evaluate(c, str(tmp_path))
  assert set(res["models"]) == {"dense", "random"}
  for name, m in res["models"].items():
    assert 0 <= m["natural_accuracy"] <= 1
    assert set(m["robust_accuracy"]) == {"pgd5", "apgd_ce"}
    assert m["density"] == (1.0 if name == "dense" else 0.5)
  for phase in ("search", "train", "evaluate"):
    assert phase in res["wall_time_s"]
  for f in ("config.json", "results.json", "status.json", "plots/accuracy.png"):
    assert (tmp_path / f).exists(), f
  assert list(tmp_path.glob("events.out.tfevents*"))  # TensorBoard files.
  start = time.time()
  again = train.train_and_evaluate(c, str(tmp_path))
  assert time.time() - start < 2 and again["models"] == res["models"]
  apply_fn, params = scalable_awt.load_trained(str(tmp_path), "random")
  x = np.zeros((3, 20), np.float32)
  assert apply_fn(params, x).shape == (3, 2)
  # Changing a results-relevant key in the same workdir is refused.
  c2 = _toy()
  c2.seed = 1
  with pytest.raises(config_validation.ConfigError, match="seed"):
    train.train_and_evaluate(c2, str(tmp_path))


def test_skipped_phases(tmp_path):
  c = _toy()
  c.methods = ("random",)
  c.phases = ("search",)
  res = train.train_and_evaluate(c, str(tmp_path))
  assert res["models"] == {}
  c.phases = ("train",)
  train.train_and_evaluate(c, str(tmp_path))
  c.phases = ("evaluate",)
  res = train.train_and_evaluate(c, str(tmp_path))
  assert "random" in res["models"]
  c.phases = ("evaluate",)
  c.methods = ("dense",)
  with pytest.raises(RuntimeError, match="search phase"):
    train.train_and_evaluate(c, str(tmp_path / "fresh"))


def _digits_search_config():
  c = config_schema.apply_smoke(config_schema.get_config())
  c.data.num_train = 256
  c.data.num_test = 64
  c.model.mlp_features = (16,)
  c.methods = ("dense", "random", "awt", "ntt", "snip")
  c.search.density = 0.2
  c.search.kernel_batch = 8
  c.search.batch_size = 32
  c.search.mask_update_period = 3
  c.train.epochs = 1
  c.checkpoint.every_steps = 3
  return c


def test_ticket_search_pipeline_and_resume(tmp_path, monkeypatch):
  """search -> train -> evaluate with every method; then a search killed mid-way resumes."""
  c = _digits_search_config()
  res = train.train_and_evaluate(c, str(tmp_path / "full"))
  assert set(res["models"]) == set(c.methods)
  for name in ("random", "awt", "ntt", "snip"):
    assert res["models"][name]["density"] == pytest.approx(0.2, abs=0.01)
  assert (tmp_path / "full" / "plots" / "search_awt.png").exists()
  _, params = scalable_awt.load_trained(str(tmp_path / "full"), "awt")
  kernel = np.asarray(params["Dense_0"]["kernel"])
  assert 0.15 < np.mean(kernel != 0) < 0.25  # The ticket stays sparse.

  # Interrupt the AWT search after 4 of its 8 steps, then resume. The step
  # itself is jitted, so the interruption comes from the host-side batch feed.
  c.methods = ("awt",)
  c.phases = ("search",)
  from scalable_awt import data as data_lib
  real_get = data_lib.Batches.get
  calls = {"n": 0}

  def interrupted_get(self, step):
    calls["n"] += 1
    if calls["n"] > 4:
      raise KeyboardInterrupt("simulated preemption")
    return real_get(self, step)

  monkeypatch.setattr(data_lib.Batches, "get", interrupted_get)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(c, str(tmp_path / "resumed"))
  assert calls["n"] == 5
  # Steps 1-3 were saved (checkpoint.every_steps = 3) before the interruption.
  assert (tmp_path / "resumed" / "checkpoints/search/awt/state/3").is_dir()
  monkeypatch.setattr(data_lib.Batches, "get", real_get)
  train.train_and_evaluate(c, str(tmp_path / "resumed"))
  import json
  read = lambda d: json.load(open(tmp_path / d / "checkpoints/search/awt/history.json"))
  assert read("resumed") == read("full")


# ----------------------------------------------------------------- the CLI


def test_config_found_in_configs_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Not the repository: no ./configs here.
  expected = os.path.join(ROOT, "configs", "mlp_digits.py")
  for given in ("mlp_digits", "mlp_digits.py", "configs/mlp_digits.py",
                expected):
    assert os.path.samefile(main.find_config(given), expected), given
  assert main.find_config("no_such_config.py") is None
  argv = main.resolve_config_argument(
      ["prog", "--config", "vgg16_cifar10.py:smoke", "--workdir", "w"])
  assert argv[2] == os.path.join(ROOT, "configs", "vgg16_cifar10.py") + ":smoke"
  argv = main.resolve_config_argument(["prog", "--config=mlp_digits"])
  assert argv[1] == "--config=" + expected
  # A file that exists where given wins over configs/.
  (tmp_path / "mlp_digits.py").write_text("")
  assert main.find_config("mlp_digits.py") == "mlp_digits.py"


def test_verbosity_is_read_before_absl_parses_it():
  assert main.requested_verbosity(["prog", "--config", "x"]) is None
  assert main.requested_verbosity(["prog", "--verbosity=1"]) == 1
  assert main.requested_verbosity(["prog", "-v", "0"]) == 0
  assert main.requested_verbosity(["prog", "--verbosity", "-1"]) == -1


def _cli(args, cwd, env=None, timeout=120):
  """Runs the entry point in a subprocess from `cwd`; (returncode, stderr)."""
  env = dict(os.environ, **(env or {}))
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  out = subprocess.run([sys.executable, "-m", "scalable_awt.main", *args],
                       cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
  return out.returncode, out.stderr


def _one_clean_line(stderr):
  lines = [l for l in stderr.splitlines() if l.strip()]
  assert "Traceback" not in stderr, stderr
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr
  return lines[0]


def test_bad_config_arguments_give_one_line_and_status_2(tmp_path):
  workdir = tmp_path / "run"
  cases = [
      (["--config", "mlp_digits.py:smok"], ("smok", "'smoke'")),
      (["--config", "mlp_digts"], ("config file not found", "mlp_digits.py")),
      (["--config", "mlp_digits", "--config.train.epoch=2"],
       ("--config.train.epoch", "did you mean 'epochs'")),
      (["--config", "mlp_digits", "--config.train.epochs=many"],
       ("--config.train.epochs=many",)),
  ]
  for args, parts in cases:
    code, stderr = _cli(args + ["--workdir", str(workdir)], cwd=str(tmp_path))
    line = _one_clean_line(stderr)
    assert code == 2, (args, stderr)
    for part in parts:
      assert part in line, (part, line)
  assert not workdir.exists()


def test_unwritable_workdir_and_missing_data_folder(tmp_path):
  (tmp_path / "a_file").write_text("not a directory")
  bad_workdir = tmp_path / "a_file" / "run"
  code, stderr = _cli(["--config", "mlp_digits:smoke", "--workdir",
                       str(bad_workdir)], cwd=str(tmp_path))
  line = _one_clean_line(stderr)
  assert code == 2 and f"--workdir={bad_workdir}" in line
  assert "a_file is a file" in line
  workdir = tmp_path / "run"
  code, stderr = _cli(["--config", "mlp_mnist:smoke", "--workdir", str(workdir),
                       f"--config.data.data_dir={tmp_path / 'mnsit'}"],
                      cwd=str(tmp_path))
  line = _one_clean_line(stderr)
  assert code == 2 and line.startswith(
      f"error: data folder not found: {tmp_path / 'mnsit'} ")
  assert not workdir.exists()  # Refused before anything was written.


def test_read_only_workdir_parent(tmp_path, monkeypatch, capsys):
  """An unwritable parent stops the run with one line and status 2.

  In-process, with the permission check answering "no" for that folder:
  chmod alone cannot show it when the tests run as root (CI does).
  """
  from scalable_awt import main
  parent = tmp_path / "ro"
  parent.mkdir()
  real_access = os.access
  monkeypatch.setattr(main.os, "access", lambda path, mode: (
      False if os.path.abspath(path) == str(parent) else real_access(path, mode)))
  with pytest.raises(SystemExit) as stop:
    main.check_workdir(str(parent / "run"))
  assert stop.value.code == 2
  assert "not writable" in _one_clean_line(capsys.readouterr().err)
  assert not (parent / "run").exists()


# The resumable run under SIGTERM: TensorFlow hidden (faster start, and the
# TensorFlow-free path), a linear model on the Gaussian toy.
NO_TF = ("import sys; sys.modules['tensorflow'] = None; "
         "sys.modules['tensorflow_datasets'] = None; "
         "from scalable_awt import main; main.run()")


@pytest.mark.slow
def test_sigterm_saves_says_how_to_resume_and_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-c", NO_TF, "--config", "toy_gaussian:smoke",
         "--workdir", workdir, "--config.methods=('dense',)",
         "--config.train.epochs=200", "--config.train.curve_every_epochs=0",
         "--config.checkpoint.every_steps=100000"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen(cmd, cwd=str(tmp_path), env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  seen = []
  for line in proc.stderr:  # Wait for the training loop to run.
    seen.append(line)
    if line.startswith("train[dense]: step"):
      proc.send_signal(signal.SIGTERM)
      break
  rest, err = proc.communicate(timeout=120)
  stderr = "".join(seen) + err
  assert proc.returncode == 130, stderr
  assert "Traceback" not in stderr, stderr
  message = re.search(r"preempted \(SIGTERM\) at train\[dense\] step (\d+)/1600; "
                      r"run the same command again to resume", stderr)
  assert message, stderr
  ckdir = os.path.join(workdir, "checkpoints", "train", "dense")
  saved = [int(s) for s in os.listdir(ckdir) if s.isdigit()]
  assert len(saved) == 1 and int(message.group(1)) <= saved[0] < 1600
  status = json.load(open(os.path.join(workdir, "status.json")))
  assert "dense" not in status["done"].get("train", {})

  again = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True,
                         text=True, timeout=240)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"train[dense]: 1600 steps (resumed at step {saved[0]})" in again.stderr
  assert "results: " in again.stdout
  # The quiet console: progress lines and the summary, no INFO log lines.
  lines = (again.stderr + again.stdout).splitlines()
  assert len(lines) <= 20, lines
  assert not [l for l in lines if re.match(r"^[IW]\d{4} ", l)], lines
