"""Test session setup: one backend per pytest run, chosen by KERAS_BACKEND.

Markers:
    backends(*names, reason=...): run only on these backends, skip elsewhere
        saying why. A test inside a marked module or class must pass every
        marker on its way.
    gpu: needs a GPU; skipped unless `--gpu` is given.

`--gpu` makes the run fail at start when the current backend sees no GPU, so
a GPU job can never pass by silently running on the CPU.

`KERAS_DROP_EXPECT_INSTALLED_IN=DIR` (set by the test command for its run
against the built wheel) makes the run fail at start unless `keras_drop` is
imported from under DIR, not from the checkout.

Hypothesis profiles (`--hypothesis-profile NAME`): "ci", the default, runs
few examples per property, the same ones on every run (derandomized), so the
suite stays fast and a failure reproduces; "installed" runs four of them,
for the run against the built wheel, which checks the packaging (the main
runs have already checked the properties); "thorough" searches hundreds
of fresh examples per property.
"""

import os
from pathlib import Path

import keras
import pytest
from hypothesis import HealthCheck, settings

import keras_drop

BACKEND = keras.backend.backend()

# Shared by every profile: no deadline (first calls compile), no example
# database, and the blob that reproduces a failure printed.
_PROFILE = dict(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci", max_examples=12, derandomize=True, **_PROFILE)
settings.register_profile("installed", max_examples=4, derandomize=True, **_PROFILE)
settings.register_profile("thorough", max_examples=300, **_PROFILE)
settings.load_profile("ci")


def pytest_addoption(parser):
    parser.addoption(
        "--gpu",
        action="store_true",
        help="require a GPU visible to the current backend and run gpu tests",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backends(*names, reason=None): run only on the named Keras backends",
    )
    config.addinivalue_line("markers", "gpu: needs a GPU (run with --gpu)")


def _visible_gpus():
    if BACKEND == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    if BACKEND == "torch":
        import torch

        return list(range(torch.cuda.device_count()))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.config.list_physical_devices("GPU")
    return []


def pytest_sessionstart(session):
    if session.config.getoption("--gpu") and not _visible_gpus():
        raise pytest.UsageError(
            f"--gpu was given but the {BACKEND} backend sees no GPU"
        )
    expected = os.environ.get("KERAS_DROP_EXPECT_INSTALLED_IN")
    package = Path(keras_drop.__file__).resolve().parent
    if expected and not package.is_relative_to(Path(expected).resolve()):
        raise pytest.UsageError(
            f"keras_drop was imported from {package}, not from the "
            f"installation in {expected}"
        )


def pytest_report_header(config):
    return (
        f"keras {keras.__version__}, KERAS_BACKEND={BACKEND} "
        f"(env: {os.environ.get('KERAS_BACKEND', 'unset')}), "
        f"GPUs visible: {len(_visible_gpus())}\n"
        f"keras_drop {keras_drop.__version__} from "
        f"{Path(keras_drop.__file__).resolve().parent}"
    )


def pytest_collection_modifyitems(config, items):
    run_gpu = config.getoption("--gpu")
    for item in items:
        # The module's marker first, then the class's, then the test's.
        for marker in reversed(list(item.iter_markers("backends"))):
            if BACKEND not in marker.args:
                reason = f"only for backends {marker.args}"
                if marker.kwargs.get("reason"):
                    reason = f"{reason}: {marker.kwargs['reason']}"
                item.add_marker(pytest.mark.skip(reason=reason))
                break
        if item.get_closest_marker("gpu") is not None and not run_gpu:
            item.add_marker(pytest.mark.skip(reason="needs --gpu"))


@pytest.fixture(autouse=True)
def clean_session():
    """Fresh Keras state around every test: names, policies, seeds.

    Without the garbage collection `clear_session` runs by default: a full
    `gc.collect()` before and after each test took 60% of the time of
    test_cutout, test_uniform and test_drop_path on JAX (172 s against 67 s),
    and Python still collects cycles on its own schedule.
    """
    keras.backend.clear_session(free_memory=False)
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1337)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)
