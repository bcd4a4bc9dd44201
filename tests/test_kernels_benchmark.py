"""The exact-kernel benchmark never replaces published results with a partial run.

`benchmarks/exact_kernel.py` is driven here with its sweep replaced by a
stand-in (the real one takes tens of minutes and a second JAX environment),
so what is tested is the bookkeeping: where checkpoints go, when the three
result files are replaced, and the ratio column.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import tempfile

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def exact_kernel():
  sys.path.insert(0, str(BENCHMARKS))
  spec = importlib.util.spec_from_file_location("exact_kernel_under_test",
                                                BENCHMARKS / "exact_kernel.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _record(side, implementation, n, traced, median_s):
  return {"model": "mlp", "n": n, "m": n, "side": side, "implementation": implementation,
          "traced": traced, "median_s": median_s, "jax": "test"}


def _records():
  records = []
  for traced in (True, False):
    records.append(_record("ours", "structured", 16, traced, 0.002))
    records.append(_record("ours", "jacobian", 16, traced, 0.5))
    records.append(_record("nt", "nt_structured_derivatives", 16, traced, 0.004))
    records.append(_record("nt", "nt_ntk_vector_products", 16, traced, 0.001 if traced else 0.3))
  return records


def _published(out_dir: pathlib.Path) -> dict:
  return {p.name: p.read_bytes() for p in sorted(out_dir.iterdir())}


def _run_main(exact_kernel, monkeypatch, argv, sweep):
  monkeypatch.setattr(exact_kernel, "sweep", sweep)
  monkeypatch.setattr(sys, "argv", ["exact_kernel.py", *argv])
  exact_kernel.main()


@pytest.fixture
def out_dir(tmp_path, monkeypatch):
  # The sweep's checkpoint file (left behind on purpose when a sweep fails)
  # goes to the system temporary directory: keep it inside the test's.
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  out = tmp_path / "results"
  out.mkdir()
  for name in ("exact_kernel.json", "exact_kernel.md", "exact_kernel.png"):
    (out / name).write_text(f"previous {name}")
  return out


def test_interrupted_sweep_leaves_results_untouched(exact_kernel, monkeypatch, out_dir):
  before = _published(out_dir)

  def interrupted(args, checkpoint):
    checkpoint(_records()[:2], 0.0)
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    _run_main(exact_kernel, monkeypatch, ["--out", str(out_dir)], interrupted)
  assert _published(out_dir) == before


def test_sweep_with_a_failed_configuration_is_not_published(exact_kernel, monkeypatch,
                                                             out_dir):
  before = _published(out_dir)

  def failing(args, checkpoint):
    records = _records() + [{**_record("nt", "nt_jacobian_contraction", 16, True, None),
                             "error": "exit 1: MemoryError"}]
    checkpoint(records, 0.0)
    return {"records": records, "sweep_wall_s": 1.0}

  with pytest.raises(SystemExit) as exit_info:
    _run_main(exact_kernel, monkeypatch, ["--out", str(out_dir)], failing)
  assert exit_info.value.code == 1
  assert _published(out_dir) == before


def test_finished_sweep_replaces_all_three_files(exact_kernel, monkeypatch, out_dir):
  def finished(args, checkpoint):
    checkpoint(_records()[:2], 0.0)
    return {"records": _records(), "sweep_wall_s": 1.0}

  _run_main(exact_kernel, monkeypatch, ["--out", str(out_dir)], finished)
  files = _published(out_dir)
  assert sorted(files) == ["exact_kernel.json", "exact_kernel.md", "exact_kernel.png"]
  result = json.loads(files["exact_kernel.json"])
  assert result["complete"] is True
  assert result["command"] == f"python benchmarks/exact_kernel.py --out {out_dir}"
  # Best ours / best NT per case: traced 0.002 / 0.001 (NT's NVP is its best
  # there), full 0.002 / 0.004.
  ratios = {row["traced"]: row["ratio"] for row in result["summary"]}
  assert ratios == pytest.approx({True: 2.0, False: 0.5})
  assert "| mlp | 16 | traced (n,m) |" in files["exact_kernel.md"].decode()
  assert files["exact_kernel.png"].startswith(b"\x89PNG")


def test_subset_sweep_needs_an_explicit_out(exact_kernel, monkeypatch):
  def never(args, checkpoint):
    raise AssertionError("the sweep must not start")

  with pytest.raises(SystemExit) as exit_info:
    _run_main(exact_kernel, monkeypatch, ["--quick"], never)
  assert exit_info.value.code == 2


def test_publish_leaves_no_temporary_files(exact_kernel, tmp_path):
  exact_kernel.publish({"a.json": "{}", "b.png": b"\x89PNG"}, tmp_path / "new")
  assert _published(tmp_path / "new") == {"a.json": b"{}", "b.png": b"\x89PNG"}
