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
  ds = data.load(_cfg(name="mnist", data_dir=str(tmp_path),
                      validation_examples=0))
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
  pytest.importorskip("tensorflow_datasets")  # The `tfds` extra.
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
  tfds = pytest.importorskip("tensorflow_datasets")  # The `tfds` extra.
  with tfds.testing.mock_data(num_examples=20):
    ds = data.load(_cfg(name="mnist", source="tfds", validation_examples=0))
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


def test_batches_index_is_the_position_in_the_training_arrays():
  x = np.arange(50, dtype=np.float32)[:, None] * 2.0
  y = np.arange(50) % 10
  b = data.Batches(x, y, 8, seed=1)
  for step in (0, 5, 6, 13):
    batch = b.get(step)
    assert batch["index"].dtype == np.int32
    np.testing.assert_array_equal(batch["index"], b.indices(step))
    np.testing.assert_array_equal(batch["image"][:, 0], x[batch["index"], 0])
    np.testing.assert_array_equal(batch["label"], y[batch["index"]])


def _mnist_idx(tmp_path, n_train):
  make_idx_dir(str(tmp_path), n_train=n_train, n_test=16)
  return _cfg(name="mnist", data_dir=str(tmp_path))


def test_validation_split_is_the_last_training_examples(tmp_path):
  arrays = make_idx_dir(str(tmp_path), n_train=40, n_test=16)
  images = arrays["train-images-idx3-ubyte"]
  labels = arrays["train-labels-idx1-ubyte"]
  ds = data.load(_cfg(name="mnist", data_dir=str(tmp_path),
                      validation_examples=10, num_train=20))
  # Held out first, then num_train cuts what is left.
  np.testing.assert_array_equal(ds.validation_images[..., 0], images[30:])
  np.testing.assert_array_equal(ds.validation_labels, labels[30:])
  np.testing.assert_array_equal(ds.train_images[..., 0], images[:20])
  assert ds.validation_images.dtype == ds.train_images.dtype == np.uint8
  assert ds.validation_labels.dtype == np.int32
  assert ds.info()["num_validation"] == 10 and ds.info()["num_train"] == 20
  none = data.load(_cfg(name="mnist", data_dir=str(tmp_path),
                        validation_examples=0))
  assert none.validation_images.shape == (0, 28, 28, 1)
  assert none.validation_labels.shape == (0,)
  assert len(none.train_labels) == 40 and none.info()["num_validation"] == 0


def test_validation_standard_sizes():
  assert data.standard_validation_examples("mnist") == 10000
  assert data.standard_validation_examples("cifar10") == 5000
  assert data.standard_validation_examples("cifar100") == 5000
  assert data.standard_validation_examples("digits") == 0
  assert data.validation_count(_cfg(name="mnist"), 60000) == 10000
  assert data.validation_count(_cfg(name="cifar10"), 50000) == 5000
  assert data.validation_count(_cfg(name="digits"), 1347) == 0
  ds = data.load(_cfg(name="digits"))  # digits: no split unless asked.
  assert len(ds.validation_labels) == 0
  held = data.load(_cfg(name="digits", validation_examples=100))
  assert len(held.validation_labels) == 100
  assert len(held.train_labels) == len(ds.train_labels) - 100
  np.testing.assert_array_equal(held.validation_images, ds.train_images[-100:])


def test_validation_split_too_large_is_a_clear_error(tmp_path):
  with pytest.raises(data.DataMismatchError, match=r"only 40.*N < 40"):
    data.load(_mnist_idx(tmp_path, 40))  # The standard 10,000 do not fit.
  c = _mnist_idx(tmp_path, 40)
  c.validation_examples = 40
  with pytest.raises(data.DataMismatchError, match="validation_examples=40"):
    data.load(c)


def test_data_folder_not_found(tmp_path):
  missing = tmp_path / "mnsit"  # A typo of an existing folder.
  make_idx_dir(str(tmp_path / "mnist"))
  for source in ("auto", "idx", "image_folder", "npz", "tfds"):
    c = _cfg(name="mnist", data_dir=str(missing), source=source)
    with pytest.raises(data.DataNotFoundError) as e:
      data.load(c)
    message = str(e.value)
    assert message.startswith(f"data folder not found: {missing} ")
    assert "config.data.data_dir=" in message and "expected" in message
    assert "IDX" in message and "tfds" not in message.split(";")[0]


def test_data_folder_without_data_is_not_a_tfds_error(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(data.DataNotFoundError, match=r"no cifar10 data in .*empty"):
    data.load(_cfg(name="cifar10", data_dir=str(tmp_path / "empty")))


def test_image_shape_must_match_the_data_set(tmp_path):
  make_image_folder(str(tmp_path / "cifar"), size=32)  # 32x32x3, CIFAR-like.
  with pytest.raises(data.DataMismatchError) as e:
    data.load(_cfg(name="mnist", data_dir=str(tmp_path / "cifar"),
                   validation_examples=0))
  message = str(e.value)
  for part in ("expects 28x28x1", "are 32x32x3", "an MNIST config pointed at "
               "CIFAR-10 data", "--config.data.data_dir"):
    assert part in message, (part, message)
  make_idx_dir(str(tmp_path / "idx"))  # 28x28x1 under a CIFAR-10 name.
  with pytest.raises(data.DataMismatchError, match="a CIFAR-10 config pointed "
                     "at MNIST data"):
    data.load(_cfg(name="cifar10", data_dir=str(tmp_path / "idx"),
                   source="idx", validation_examples=0))
  ok = data.load(_cfg(name="image_folder", data_dir=str(tmp_path / "cifar")))
  assert ok.image_shape == (32, 32, 3)  # Unnamed data sets take any shape.


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
  unsharded = data.Batches(x, np.zeros(64), 16, seed=0).get(0)
  np.testing.assert_array_equal(np.asarray(batch["image"]), unsharded["image"])
  np.testing.assert_array_equal(np.asarray(batch["index"]), unsharded["index"])


NO_TF = ("import sys; sys.modules['tensorflow'] = None; "
         "sys.modules['tensorflow_datasets'] = None; ")


def test_without_tensorflow(tmp_path):
  """IDX and image folders, JSONL metrics and the whole runner without TF."""
  make_idx_dir(str(tmp_path / "idx"), n_train=96, n_test=16)
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
            '--config.data.validation_examples=8',
            '--config.train.epochs=1', '--config.methods=("random",)']
from scalable_awt import main
main.run()
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=240)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "run" / "metrics.jsonl").exists()
  assert (tmp_path / "run" / "results.json").exists()
  # TensorBoard's own (TensorFlow-free) writer still writes event files.
  assert list((tmp_path / "run").glob("events.out.tfevents*"))
