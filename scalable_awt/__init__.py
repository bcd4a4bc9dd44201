"""Adversarial winning tickets in JAX with scalable Mixed Tangent Kernel estimators."""


def load_trained(workdir, model_name=None):
  """`(apply_fn, params)` of a trained ticket in `workdir` (AWT by default).

  See `train.load_trained`; `model_name` picks another method of the run.
  """
  from scalable_awt.train import load_trained as _load_trained
  return _load_trained(workdir, model_name)


__all__ = ["load_trained"]
