"""Input pipeline: every reader on data the test makes, determinism, errors."""
import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from scalable_awt import config_schema
from scalable_awt import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(**kw):
  c = config_schema.get_config().data
  for k, v in kw.items():
    c[k] = v
  return c


def write_idx(path, array, gz=True):
  header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(
      ">" + "I" * array.ndim, *array.shape)
  raw = header + np.asarray(array, np.uint8).tobytes()
  with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
    f.write(raw)


def make_idx_dir(root, n_train=40, n_test=16, gz=True):
  rng = np.random.default_rng(0)
  arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
            "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,)),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,))}
  os.makedirs(root, exist_ok=True)
  for name, a in arrays.items():
    write_idx(os.path.join(root, name + (".gz" if gz else "")), a, gz)
  return arrays


def make_image_folder(root, per_class=3, size=6, mode="RGB"):
  from PIL import Image
  rng = np.random.default_rng(1)
  for split in ("train", "test"):
    for label in ("cat", "ant", "dog"):
      folder = os.path.join(root, split, label)
      os.makedirs(folder, exist_ok=True)
      for i in range(per_class):
        shape = (size, size, 3) if mode == "RGB" else (size, size)
        Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), mode).save(
            os.path.join(folder, f"{i:03d}.png"))


@pytest.mark.parametrize("gz", [True, False])
def test_idx(tmp_path, gz):
  arrays = make_idx_dir(str(tmp_path), gz=gz)
  ds = data.load(_cfg(name="mnist", data_dir=str(tmp_path)))
  assert ds.source.startswith("idx")
  assert ds.train_images.shape == (40, 28, 28, 1)
  np.testing.assert_array_equal(ds.train_images[..., 0],
                                arrays["train-images-idx3-ubyte"])
  np.testing.assert_array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])
  assert ds.num_classes == 10
  x = data.to_float(ds.train_images)
  assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_image_folder_tfds_and_pil_agree(tmp_path, mode):
  make_image_folder(str(tmp_path), mode=mode)
  a = data.load_image_folder_split(str(tmp_path), "train", backend="tfds")
  b = data.load_image_folder_split(str(tmp_path), "train", backend="pil")
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert a[2] == ["ant", "cat", "dog"]
  assert a[0].shape == (9, 6, 6, 3 if mode == "RGB" else 1)
  ds = data.load(_cfg(name="image_folder", data_dir=str(tmp_path)))
  assert ds.num_classes == 3 and len(ds.test_labels) == 9


def test_npz(tmp_path):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "d.npz")
  np.savez(path, x_train=rng.random((10, 4, 4, 1), np.float32),
           y_train=np.arange(10) % 3, x_test=rng.random((5, 4, 4, 1), np.float32),
           y_test=np.arange(5) % 3)
  ds = data.load(_cfg(name="npz", data_dir=path))
  assert ds.num_classes == 3 and ds.train_images.dtype == np.float32


def test_tfds_mock_data():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=20):
    ds = data.load(_cfg(name="mnist", source="tfds"))
  assert ds.train_images.shape == (20, 28, 28, 1)
  assert ds.train_images.dtype == np.uint8 and ds.num_classes == 10


def test_missing_data_says_where_and_how(tmp_path):
  with pytest.raises(data.DataNotFoundError) as e:
    data.load(_cfg(name="cifar10", data_dir=str(tmp_path / "nowhere")))
  assert str(tmp_path / "nowhere") in str(e.value)
  assert "data_dir" in str(e.value) and "image folder" in str(e.value)
  with pytest.raises(data.DataNotFoundError, match="IDX files missing"):
    data.load(_cfg(name="idx", data_dir=str(tmp_path)))


def test_digits_and_toy():
  ds = data.load(_cfg(name="digits"))
  assert ds.train_images.shape[1:] == (8, 8, 1) and ds.train_images.max() <= 1
  toy = data.load(_cfg(name="gaussian_toy", toy_num_train=64, toy_num_test=32))
  assert toy.domain is None and toy.train_images.shape == (64, 100)


def test_batches_deterministic_and_resumable():
  x = np.arange(100, dtype=np.float32)[:, None]
  y = np.arange(100) % 10
  a = data.Batches(x, y, 16, seed=3)
  first = [a.get(s)["image"][:, 0].copy() for s in range(14)]
  b = data.Batches(x, y, 16, seed=3, start_step=9)
  np.testing.assert_array_equal(b.get(9)["image"][:, 0], first[9])
  # One epoch = 6 batches, each example at most once; epochs differ.
  seen = np.concatenate(first[:6])
  assert len(set(seen.tolist())) == 96
  assert not np.array_equal(first[0], first[6])
  c = data.Batches(x, y, 16, seed=4)
  assert not np.array_equal(c.get(0)["image"], first[0])


def test_batches_sharded():
  import jax
  from scalable_awt import distribution
  mesh = distribution.make_mesh()
  x = np.arange(64, dtype=np.float32).reshape(64, 1)
  b = data.Batches(x, np.zeros(64, np.int32), 16, seed=0,
                   sharding=distribution.batch_sharded(mesh))
  batch = b.get(0)
  assert isinstance(batch["image"], jax.Array)
  assert len(batch["image"].sharding.device_set) == jax.device_count()
  np.testing.assert_array_equal(np.asarray(batch["image"]),
                                data.Batches(x, np.zeros(64), 16, seed=0).get(0)["image"])


NO_TF = ("import sys; sys.modules['tensorflow'] = None; "
         "sys.modules['tensorflow_datasets'] = None; ")


def test_without_tensorflow(tmp_path):
  """IDX and image folders, JSONL metrics and the whole runner without TF."""
  make_idx_dir(str(tmp_path / "idx"), n_train=64, n_test=16)
  make_image_folder(str(tmp_path / "img"))
  code = NO_TF + f"""
from scalable_awt import config_schema, data, metrics
assert not data.tensorflow_available()
c = config_schema.get_config().data
c.name = 'image_folder'; c.data_dir = {str(tmp_path / 'img')!r}
ds = data.load(c)
assert ds.train_images.shape == (9, 6, 6, 3), ds.train_images.shape
w = metrics.create_writer({str(tmp_path / 'logs')!r})
assert isinstance(w, metrics.JsonlWriter)
c.name = 'cifar10'; c.source = 'tfds'
try:
  data.load(c); raise SystemExit('no error')
except data.DataNotFoundError as e:
  assert 'needs TensorFlow' in str(e)
sys.argv = ['main', '--config', 'configs/mlp_mnist.py:smoke', '--workdir',
            {str(tmp_path / 'run')!r}, '--config.data.data_dir={tmp_path / 'idx'}',
            '--config.train.epochs=1', '--config.methods=("random",)']
from scalable_awt import main
main.run()
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=240)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "run" / "metrics.jsonl").exists()
  assert (tmp_path / "run" / "results.json").exists()
  assert not list((tmp_path / "run").glob("events.out.tfevents*"))
