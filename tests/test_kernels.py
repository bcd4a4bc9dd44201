"""Properties of the exact MTK that need no reference implementation.

The comparison with neural-tangents lives in test_kernels_reference.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalable_awt import masks, models
from scalable_awt.kernels import IMPLEMENTATIONS, _common, exact_mtk, exact_mtk_diagonal

# Small versions of the paper's three models (VGG with every normalisation).
MODELS = {
    "mlp": (lambda: models.MLP(features=(16, 8)), (8, 8)),
    "cnn": (lambda: models.CNN(conv_features=(4, 8), kernel_size=(3, 3), dense_features=16),
            (8, 8, 1)),
    "vgg_batchnorm": (lambda: models.VGG16(layout=(4, "M", 8, "M"), classifier_features=(8,),
                                           norm="batch"), (4, 4, 3)),
    "vgg_groupnorm": (lambda: models.VGG16(layout=(4, "M", 8, "M"), classifier_features=(8,),
                                           norm="group"), (4, 4, 3)),
}


def _setup(name, n=5, m=3, seed=0):
  build, shape = MODELS[name]
  model = build()
  params, state = models.init_model(model, jax.random.key(seed), (1,) + shape)
  apply_fn = models.make_apply_fn(model, state)
  key_clean, key_adv = jax.random.split(jax.random.key(seed + 1))
  x = jax.random.uniform(key_clean, (n,) + shape)
  x_adv = jax.random.uniform(key_adv, (m,) + shape)
  return apply_fn, params, x, x_adv


def _relative_error(a, b):
  return float(jnp.linalg.norm((a - b).ravel()) / jnp.linalg.norm(b.ravel()))


def _as_matrix(kernel):
  """(n, m, C, C) -> (nC, mC), rows (i, c), columns (j, d)."""
  n, m, c, d = kernel.shape
  return jnp.transpose(kernel, (0, 2, 1, 3)).reshape(n * c, m * d)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_all_implementations_agree(name):
  apply_fn, params, x, x_adv = _setup(name)
  oracle = exact_mtk(apply_fn, params, x, x_adv, implementation="jacobian")
  assert oracle.shape == (5, 3, 10, 10)
  for implementation in IMPLEMENTATIONS:
    kernel = jax.jit(lambda p, a, b: exact_mtk(
        apply_fn, p, a, b, implementation=implementation))(params, x, x_adv)
    traced = exact_mtk(apply_fn, params, x, x_adv, trace_outputs=True,
                       implementation=implementation)
    assert kernel.shape == (5, 3, 10, 10) and traced.shape == (5, 3)
    assert _relative_error(kernel, oracle) < 1e-5, implementation
    assert _relative_error(traced, jnp.einsum("ijcc->ij", oracle)) < 1e-5, implementation


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_ntk_is_symmetric_positive_semidefinite(implementation):
  apply_fn, params, x, _ = _setup("cnn", n=6)
  matrix = _as_matrix(exact_mtk(apply_fn, params, x, x, implementation=implementation))
  np.testing.assert_allclose(matrix, matrix.T, rtol=1e-5, atol=1e-5 * jnp.abs(matrix).max())
  eigenvalues = jnp.linalg.eigvalsh(0.5 * (matrix + matrix.T))
  assert eigenvalues.min() > -1e-5 * eigenvalues.max()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_swapping_inputs_transposes_the_kernel(implementation):
  apply_fn, params, x, x_adv = _setup("mlp")
  forward = exact_mtk(apply_fn, params, x, x_adv, implementation=implementation)
  backward = exact_mtk(apply_fn, params, x_adv, x, implementation=implementation)
  np.testing.assert_allclose(_as_matrix(forward), _as_matrix(backward).T, rtol=1e-5,
                             atol=1e-6 * jnp.abs(forward).max())


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_linear_model_has_closed_form(implementation):
  """f(x) = Wᵀx gives Θ(x, x̃) = ⟨x, x̃⟩ I_C exactly."""
  num_features, num_classes = 7, 4
  params = {"W": jax.random.normal(jax.random.key(0), (num_features, num_classes))}
  apply_fn = lambda p, inputs: inputs @ p["W"]
  x = jax.random.normal(jax.random.key(1), (5, num_features))
  x_adv = jax.random.normal(jax.random.key(2), (3, num_features))
  kernel = exact_mtk(apply_fn, params, x, x_adv, implementation=implementation)
  expected = (x @ x_adv.T)[:, :, None, None] * jnp.eye(num_classes)
  np.testing.assert_allclose(kernel, expected, rtol=1e-5, atol=1e-5)
  traced = exact_mtk(apply_fn, params, x, x_adv, trace_outputs=True,
                     implementation=implementation)
  np.testing.assert_allclose(traced, num_classes * (x @ x_adv.T), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("chunk_size", [2, 4])
def test_chunked_equals_unchunked(implementation, chunk_size):
  apply_fn, params, x, x_adv = _setup("cnn", n=5, m=7)
  full = exact_mtk(apply_fn, params, x, x_adv, implementation=implementation)
  chunked = jax.jit(lambda p: exact_mtk(apply_fn, p, x, x_adv, implementation=implementation,
                                        chunk_size=chunk_size))(params)
  assert chunked.shape == full.shape
  assert _relative_error(chunked, full) < 1e-6


@pytest.mark.parametrize("name", ["mlp", "cnn", "vgg_groupnorm"])
def test_diagonal_blocks_match_full_kernel(name):
  apply_fn, params, x, x_adv = _setup(name, n=4, m=4)
  full = exact_mtk(apply_fn, params, x, x_adv)
  expected = jnp.einsum("iicd->icd", full)
  for implementation in IMPLEMENTATIONS:
    blocks = exact_mtk_diagonal(apply_fn, params, x, x_adv, implementation=implementation)
    traced = exact_mtk_diagonal(apply_fn, params, x, x_adv, trace_outputs=True,
                                implementation=implementation)
    assert blocks.shape == (4, 10, 10) and traced.shape == (4,)
    assert _relative_error(blocks, expected) < 1e-5, implementation
    assert _relative_error(traced, jnp.einsum("icc->i", expected)) < 1e-5, implementation


@pytest.mark.parametrize("name", ["mlp", "cnn", "vgg_groupnorm"])
def test_masked_parameters_give_the_sparse_network_kernel(name):
  """For g(θ) = f(m ⊙ θ): Θ = J_f(m ⊙ θ) diag(m) J_f(m ⊙ θ)ᵀ (pruned weights are frozen)."""
  apply_fn, params, x, x_adv = _setup(name, n=4, m=3)
  mask = masks.random_mask(jax.random.key(7), params, density=0.3)
  sparse_fn = lambda p, inputs: apply_fn(masks.apply_mask(p, mask), inputs)

  def masked_jacobian(inputs):
    jac = _common.per_example_jacobian(sparse_fn, params, inputs)
    return jax.tree.map(lambda j, m: j * m, jac, mask)

  expected = _common.contract_per_example_grads(
      masked_jacobian(x), masked_jacobian(x_adv), trace_outputs=False)
  for implementation in IMPLEMENTATIONS:
    kernel = jax.jit(lambda p: exact_mtk(sparse_fn, p, x, x_adv,
                                         implementation=implementation))(params)
    assert _relative_error(kernel, expected) < 1e-5, implementation
    traced = exact_mtk(sparse_fn, params, x, x_adv, trace_outputs=True,
                       implementation=implementation)
    assert _relative_error(traced, jnp.einsum("ijcc->ij", expected)) < 1e-5, implementation
    diagonal = exact_mtk_diagonal(sparse_fn, params, x, x[::-1],
                                  implementation=implementation)
    diagonal_expected = jnp.einsum("iicd->icd", _common.contract_per_example_grads(
        masked_jacobian(x), masked_jacobian(x[::-1]), trace_outputs=False))
    assert _relative_error(diagonal, diagonal_expected) < 1e-5, implementation
  # And the sparse kernel really differs from the dense one.
  dense = exact_mtk(apply_fn, params, x, x_adv)
  assert _relative_error(expected, dense) > 1e-2


def test_float64_under_x64():
  apply_fn, params, x, x_adv = _setup("mlp")
  with jax.enable_x64(True):
    params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    x64, x_adv64 = jnp.asarray(x, jnp.float64), jnp.asarray(x_adv, jnp.float64)
    oracle = exact_mtk(apply_fn, params64, x64, x_adv64)
    assert oracle.dtype == jnp.float64
    for implementation in IMPLEMENTATIONS:
      kernel = exact_mtk(apply_fn, params64, x64, x_adv64, implementation=implementation)
      assert kernel.dtype == jnp.float64
      assert _relative_error(kernel, oracle) < 1e-12, implementation


def test_bad_arguments_raise_clear_errors():
  apply_fn, params, x, x_adv = _setup("mlp")
  with pytest.raises(ValueError, match="Unknown MTK implementation 'fast'"):
    exact_mtk(apply_fn, params, x, x_adv, implementation="fast")
  with pytest.raises(ValueError, match=r"pairs x\[i\] with x_adv\[i\]"):
    exact_mtk_diagonal(apply_fn, params, x, x_adv)
  with pytest.raises(ValueError, match="same example shape"):
    exact_mtk(apply_fn, params, x, x_adv.reshape(3, -1)[:, :10])
