"""Test-wide setup.

Eight simulated CPU devices for the whole suite, so the multi-device tests run
in the same process as everything else (the flag must be set before JAX is
imported, hence here). Single-device code is unaffected: un-sharded arrays
live on device 0.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# TensorFlow (pulled in by tfds/clu) must never grab a GPU that JAX uses.
os.environ.setdefault("CUDA_VISIBLE_DEVICES_FOR_TF", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import pytest  # noqa: E402  (after the environment above)


@pytest.fixture
def evaluated_sizes(monkeypatch):
  """The number of examples of every `evaluation.evaluate` call from now on.

  What shows that a recipe study attacked only the validation split: every
  call's size is the split's, never the test set's.
  """
  from scalable_awt import evaluation
  sizes = []
  evaluate = evaluation.evaluate

  def recording(apply_fn, params, images, labels, **kwargs):
    sizes.append(len(labels))
    return evaluate(apply_fn, params, images, labels, **kwargs)
  monkeypatch.setattr(evaluation, "evaluate", recording)
  return sizes
