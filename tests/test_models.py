"""Model building blocks."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from scalable_awt import models


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (3, 7, 5, 2), (1, 2, 2, 1)])
def test_max_pool_2x2_matches_flax_values_and_gradients(shape):
  x = jax.random.normal(jax.random.key(0), shape)  # No ties (almost surely).
  reference = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(models.max_pool_2x2(x), reference(x))
  weights = jax.random.normal(jax.random.key(1), reference(x).shape)
  grad = jax.grad(lambda v: (models.max_pool_2x2(v) * weights).sum())(x)
  grad_reference = jax.grad(lambda v: (reference(v) * weights).sum())(x)
  np.testing.assert_allclose(grad, grad_reference, rtol=0, atol=0)
