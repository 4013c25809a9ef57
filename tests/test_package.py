"""The package as users install it: its modules, metadata and typing marker,
and every public name at work once.

The test command also runs this file against the wheel installed in a fresh
virtualenv (see `tasks.py`), so it needs nothing but the installed package
and the `test` extra: no file of the checkout.
"""

import importlib
import importlib.metadata
import importlib.util
import pkgutil
from pathlib import Path

import keras
import numpy as np
import pytest
from packaging.version import Version

import keras_drop
from keras_drop import ops as drop_ops
from tests.helpers import JIT_COMPILE, to_numpy

DISTRIBUTION = "keras-drop"


def test_every_module_imports():
    names = [
        module.name
        for module in pkgutil.walk_packages(keras_drop.__path__, "keras_drop.")
    ]
    assert "keras_drop.layers.dropblock" in names
    for name in names:
        importlib.import_module(name)


def test_version_is_the_distribution_version():
    assert importlib.metadata.version(DISTRIBUTION) == keras_drop.__version__
    assert str(Version(keras_drop.__version__)) == keras_drop.__version__


def test_typed_marker_and_license_are_installed():
    assert (Path(keras_drop.__file__).parent / "py.typed").is_file()
    metadata = importlib.metadata.metadata(DISTRIBUTION)
    assert metadata["License-Expression"] == "Apache-2.0"
    files = importlib.metadata.files(DISTRIBUTION) or []
    licenses = [f for f in files if f.name == "LICENSE"]
    assert licenses, "LICENSE is not in the distribution"
    assert "Apache License" in licenses[0].read_text()


def _public(module):
    return {name: getattr(module, name) for name in module.__all__}


def test_every_public_name_has_a_docstring():
    public = {
        **_public(keras_drop),
        **{f"ops.{n}": v for n, v in _public(keras_drop.ops).items()},
        **{f"recipes.{n}": v for n, v in _public(keras_drop.recipes).items()},
    }
    public.pop("__version__")
    for name, obj in public.items():
        # The object's own docstring, not one inherited from a base class.
        doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
        assert doc and doc.strip(), f"{name} has no docstring"


def _residual_model(bn=True):
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    if bn:
        x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Add(name="add1")([inputs, x])
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_every_public_name_at_work(tmp_path):
    """Each public layer in one model that trains with the scheduler, saves
    and reloads; each function and op called once. The set of names used
    must be the public API, so a new public name needs a line here."""
    used = set()
    x = np.random.default_rng(0).uniform(0.5, 1.5, (8, 8, 8, 4)).astype("float32")
    y = np.zeros((8, 1), "float32")

    inputs = keras.Input((8, 8, 4))
    h = keras_drop.Cutout(3, seed=0)(inputs)
    h = keras_drop.DropBlock2D(0.1, 3, seed=1)(h)
    h = keras_drop.UniformDropout(0.1, seed=2)(h)
    branch = keras.layers.Conv2D(4, 3, padding="same")(h)
    h = keras.layers.Add()([h, keras_drop.DropPath(0.1, seed=3)(branch)])
    h = keras_drop.StochasticDepth(0.2, seed=4)([h, branch])
    h = keras_drop.StochasticDepthBlock(
        keras.layers.Conv2D(4, 3, padding="same"), 0.2, seed=5
    )(h)
    h = keras_drop.LayerDrop(keras.layers.Conv2D(4, 3, padding="same"), 0.2, seed=9)(h)
    h = keras_drop.JoinDropPath(0.2, seed=10)([h, branch])
    seq = keras.layers.Reshape((8, 32))(h)
    seq = keras_drop.DropBlock1D(0.1, 2, seed=6)(seq)
    vol = keras.layers.Reshape((2, 4, 4, 8))(seq)
    vol = keras_drop.DropBlock3D(0.1, 2, seed=7)(vol)
    flat = keras.layers.GlobalAveragePooling3D()(vol)
    tokens = keras_drop.PatchDropout(0.5, seed=9)(seq)
    flat = keras.layers.Concatenate()(
        [flat, keras.layers.GlobalAveragePooling1D()(tokens)]
    )
    outputs = keras_drop.DropConnectDense(1, 0.1, seed=8)(flat)
    model = keras.Model(inputs, outputs)
    used |= {
        "Cutout",
        "DropBlock1D",
        "DropBlock2D",
        "DropBlock3D",
        "UniformDropout",
        "DropPath",
        "StochasticDepth",
        "StochasticDepthBlock",
        "LayerDrop",
        "JoinDropPath",
        "DropConnectDense",
        "PatchDropout",
    }

    model.compile(optimizer="sgd", loss="mse", jit_compile=JIT_COMPILE)
    history = model.fit(
        x,
        y,
        batch_size=4,
        epochs=1,
        verbose=0,
        callbacks=[keras_drop.DropRateScheduler()],
    )
    used.add("DropRateScheduler")
    assert np.isfinite(history.history["loss"][-1])
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        to_numpy(reloaded.predict(x, verbose=0)),
        to_numpy(model.predict(x, verbose=0)),
        rtol=1e-5,
        atol=1e-6,
    )

    rates = keras_drop.stochastic_depth_rates(4, 0.2)
    assert np.allclose(rates, [0.05, 0.1, 0.15, 0.2])
    used.add("stochastic_depth_rates")

    base = _residual_model()
    deep = keras_drop.add_stochastic_depth(base, 0.2, seed=0)
    assert any(isinstance(layer, keras_drop.StochasticDepth) for layer in deep.layers)
    blocked = keras_drop.add_dropblock(base, 0.1, 3, where=["bn1"], seed=0)
    assert any(isinstance(layer, keras_drop.DropBlock2D) for layer in blocked.layers)
    assert not keras_drop.recipes.resnet50_groups_3_4(base.layers[1])
    used |= {"add_stochastic_depth", "add_dropblock", "recipes"}
    token_inputs = keras.Input((6, 4))
    embedded = keras.layers.Dense(4, name="embed")(token_inputs)
    token_model = keras.Model(
        token_inputs, keras.layers.GlobalAveragePooling1D()(embedded)
    )
    dropped = keras_drop.add_patch_dropout(
        token_model, 0.5, after="embed", num_prefix_tokens=1, seed=0
    )
    assert any(isinstance(layer, keras_drop.PatchDropout) for layer in dropped.layers)
    used.add("add_patch_dropout")
    stack_inputs = keras.Input((4,))
    residual = keras.Model(
        stack_inputs,
        stack_inputs + keras.layers.Dense(4)(stack_inputs),
        name="residual",
    )
    stack = keras.Model(stack_inputs, residual(stack_inputs))
    layer_dropped = keras_drop.add_layer_drop(stack, 0.5, where=["residual"], seed=0)
    assert isinstance(layer_dropped.layers[-1], keras_drop.LayerDrop)
    pruned = keras_drop.prune_layers(layer_dropped, ["residual_layer_drop"])
    assert len(pruned.weights) == len(stack.weights)
    used |= {"add_layer_drop", "prune_layers"}

    shift = keras_drop.variance_shift(base, x)
    keras_drop.recalibrate_batchnorm(base, x)
    assert set(shift) == {"bn1"}
    np.testing.assert_allclose(keras_drop.variance_shift(base, x)["bn1"], 1.0, 1e-3)
    used |= {"variance_shift", "recalibrate_batchnorm"}

    samples = keras_drop.mc_predict(model, x, samples=2, seed=0)
    assert samples.shape == (2, 8, 1) and np.isfinite(samples).all()
    used.add("mc_predict")
    if keras.backend.backend() == "torch":
        with pytest.raises(NotImplementedError):
            keras_drop.export_monte_carlo(model, tmp_path / "mc", samples=2)
    elif importlib.util.find_spec("tensorflow") is None:
        # A SavedModel needs TensorFlow: an installation with the jax extra
        # alone gets Keras' error naming the missing module.
        with pytest.raises(ImportError, match="tensorflow"):
            keras_drop.export_monte_carlo(model, tmp_path / "mc", samples=2)
    else:
        keras_drop.export_monte_carlo(model, tmp_path / "mc", samples=2)
        assert (tmp_path / "mc" / "saved_model.pb").is_file()
    used.add("export_monte_carlo")

    image = x[:2]
    ops_used = {
        "drop_block": drop_ops.drop_block(image, 0.1, 3, seed=0),
        "cutout": drop_ops.cutout(image, 3, seed=0),
        "drop_path": drop_ops.drop_path(image, 0.1, seed=0),
        "drop_path_subset": drop_ops.drop_path_subset(
            image, lambda kept: kept * 2.0, 0.5, seed=0
        ),
        "stochastic_depth": drop_ops.stochastic_depth(image, image, 0.1, seed=0),
        "drop_connect": drop_ops.drop_connect(image, 0.1, seed=0),
        "uniform_dropout": drop_ops.uniform_dropout(image, 0.1, seed=0),
    }
    for name, output in ops_used.items():
        assert to_numpy(output).shape == image.shape, name
    tokens, indices = drop_ops.patch_dropout(image[:, 0], 0.5, seed=0)
    assert to_numpy(tokens).shape == (2, 1 + 3, 4)
    assert to_numpy(indices).shape == (2, 3)
    ops_used["patch_dropout"] = tokens
    used.add("ops")

    assert used == set(keras_drop.__all__) - {"__version__"}
    assert set(ops_used) == set(drop_ops.__all__)
