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
