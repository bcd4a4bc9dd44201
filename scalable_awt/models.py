"""The paper's three models as Flax (linen) modules, plus the `apply_fn` adapter.

Every model maps inputs in the pixel domain [0, 1] to logits of shape
`(batch, num_classes)`. Any input normalisation (`input_mean`, `input_std`)
happens *inside* the model, so attacks and kernels work in pixel space.

Every model takes `train: bool` so that the training code can treat models with
and without batch statistics alike.

Normalisation layers and the kernel
-----------------------------------
The MTK `Θ(x, x̃) = J(x) J(x̃)ᵀ` is defined for a network that maps each input
on its own. Batch norm in training mode couples the examples of a batch through
the batch statistics, so "the Jacobian of one example" stops being defined and a
kernel computed by vmapping over examples would be silently wrong. We therefore:

* give VGG-16 a `norm` switch: `"batch"` (the default, the usual VGG-16 for
  CIFAR and what HYDRA uses), `"group"` (per-example, no state) or `"none"`;
* always compute kernels, attacks and evaluation in inference mode
  (`train=False`), where batch norm is the fixed affine map given by its
  running statistics. At initialisation those are mean 0 / variance 1, so the
  kernel at initialisation is that of the network with the normalisation's
  scale and bias as ordinary parameters. Training uses batch statistics as
  usual and updates the running averages.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ApplyFn = Callable[[Any, jax.Array], jax.Array]

# VGG-16 ("configuration D" of Simonyan & Zisserman): numbers are conv widths,
# "M" is a 2x2 max pool. Five pools take 32x32 CIFAR images to 1x1.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M")


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, VALID padding, NHWC: `nn.max_pool`'s values.

  Written as a reshape and a max, not `reduce_window`: the kernel estimators
  differentiate through JVPs of VJPs, and `reduce_window`'s JVP (an argmax by
  variadic reduce-window) made each such pass tens of times slower than the
  forward pass on CPU. Where a window holds ties the tangent is their mean;
  after a ReLU the only likely ties are zeros, whose tangents are zero anyway.
  """
  n, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _normalise_input(x: jax.Array, mean, std) -> jax.Array:
  if mean is not None:
    x = x - jnp.asarray(mean, x.dtype)
  if std is not None:
    x = x / jnp.asarray(std, x.dtype)
  return x


class MLP(nn.Module):
  """Fully connected ReLU network; the paper's MNIST MLP is 784-300-100-10."""
  features: Sequence[int] = (300, 100)
  num_classes: int = 10
  input_mean: Any = None
  input_std: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # No layer behaves differently in training.
    x = _normalise_input(x, self.input_mean, self.input_std)
    x = x.reshape((x.shape[0], -1))
    for width in self.features:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
  """The paper's 6-layer CNN: conv 32, pool, conv 64, pool, dense 1024, dense C.

  Convolutions are 5x5 with SAME padding and ReLU, pools are 2x2 max pools with
  stride 2 (the classic TensorFlow MNIST CNN that NTT and the paper use).
  Inputs are NHWC.
  """
  conv_features: Sequence[int] = (32, 64)
  kernel_size: tuple[int, int] = (5, 5)
  dense_features: int = 1024
  num_classes: int = 10
  input_mean: Any = None
  input_std: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    x = _normalise_input(x, self.input_mean, self.input_std)
    for width in self.conv_features:
      x = nn.relu(nn.Conv(width, self.kernel_size, padding="SAME")(x))
      x = max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense_features)(x))
    return nn.Dense(self.num_classes)(x)


class VGG16(nn.Module):
  """VGG-16 for 32x32 inputs: 13 3x3 convolutions, then a small classifier.

  `norm` is "batch", "group" or "none" (see the module docstring for how batch
  norm interacts with the kernel). The classifier is `classifier_features`
  dense ReLU layers and a final dense layer, as in the CIFAR VGG-16 of HYDRA.
  """
  layout: Sequence[int | str] = VGG16_LAYOUT
  # Multiplies every convolution's width (1.0 = VGG-16). A small multiplier
  # keeps the architecture (13 convolutions, 5 pools) for quick CPU runs.
  width: float = 1.0
  classifier_features: Sequence[int] = (256, 256)
  num_classes: int = 10
  norm: str = "batch"
  input_mean: Any = None
  input_std: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.norm not in ("batch", "group", "none"):
      raise ValueError(f"VGG16.norm={self.norm!r}; use 'batch', 'group' or 'none'.")
    x = _normalise_input(x, self.input_mean, self.input_std)
    for item in self.layout:
      if item == "M":
        x = max_pool_2x2(x)
        continue
      use_bias = self.norm == "none"  # The norm layer's bias replaces it.
      features = max(1, round(int(item) * self.width))
      x = nn.Conv(features, (3, 3), padding="SAME", use_bias=use_bias)(x)
      if self.norm == "batch":
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      elif self.norm == "group":
        x = nn.GroupNorm(num_groups=math.gcd(32, features))(x)
      x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    for width in self.classifier_features:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


_MODELS = {"mlp": MLP, "cnn": CNN, "vgg16": VGG16}


def create_model(name: str, **kwargs) -> nn.Module:
  """Builds a model by name: one of "mlp", "cnn", "vgg16"."""
  if name not in _MODELS:
    raise ValueError(f"Unknown model {name!r}; choose one of {sorted(_MODELS)}.")
  return _MODELS[name](**kwargs)


def init_model(model: nn.Module, key: jax.Array, input_shape: Sequence[int]):
  """Returns `(params, model_state)` for inputs of shape `(batch, *rest)`.

  `model_state` holds every non-parameter collection (e.g. `batch_stats`); it
  is an empty dict for models without state.
  """
  variables = model.init(key, jnp.zeros(tuple(input_shape), jnp.float32), train=False)
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


def make_apply_fn(model: nn.Module,
                  model_state: Mapping[str, Any] | None = None) -> ApplyFn:
  """Returns `apply_fn(params, x) -> logits` in inference mode.

  This is the function every kernel, estimator, attack and evaluation takes.
  `model_state` (e.g. batch-norm running statistics) is closed over: it is not
  a parameter of the kernel.
  """
  state = dict(model_state or {})

  def apply_fn(params, x):
    return model.apply({"params": params, **state}, x, train=False)

  return apply_fn
