"""The run's RNG scheme: every key is a `fold_in` of the seed.

Keys by phase (`phase_keys`), then by method (`method_key`, from the method's
name, so adding or reordering `config.methods` changes no other method's
numbers), then by step inside each loop (`fold_in(key, step)`). Together
with batches that are a function of `(seed, step)` (`data.Batches`), a
resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import zlib

import jax

PHASES = ("init", "search", "train", "eval")


def phase_keys(seed: int) -> dict[str, jax.Array]:
  """One key per phase: "init", "search", "train", "eval"."""
  root = jax.random.PRNGKey(int(seed))
  return {name: jax.random.fold_in(root, i) for i, name in enumerate(PHASES)}


def method_key(key: jax.Array, method: str) -> jax.Array:
  """A per-method key that does not depend on the order of `methods`."""
  return jax.random.fold_in(key, zlib.crc32(method.encode()) & 0x7FFFFFFF)
