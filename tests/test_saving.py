"""Saving and serving models that hold every keras_drop layer.

- `.keras` files of a functional, a Sequential and a subclassed model
  (`tests/every_layer.py`) reload in a fresh process with nothing but
  `import keras_drop`: the same configs, bit for bit the same predictions.
- `model.export` artifacts serve what `predict` returns with no keras_drop
  anywhere: TensorFlow SavedModels (TensorFlow and JAX backends) and ONNX
  (every backend), served by TensorFlow and ONNX Runtime alone in a fresh
  process (`tests/serve_exported.py`); the exported graph is the inference
  path only.
- Inference is deterministic and is the layers' documented inference.
- A saved config holding a bad argument fails to load with a `ValueError`
  naming it.

The per-layer `get_config` / `from_config` / `serialize_keras_object` round
trips with non-default arguments are in each layer's smoke test
(`tests/helpers.py: run_layer_test`); `StochasticDepthBlock`, which wraps
layers, has its own here.
"""

from __future__ import annotations

import json
import re
import zipfile
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from keras_drop import StochasticDepthBlock
from keras_drop.layers._keras_internals import sublayers
from tests import every_layer
from tests.helpers import BACKEND, ROOT, bits, run_in_fresh_process

SAVED_MODEL_BACKENDS = ("tensorflow", "jax")
SAVED_MODEL_REASON = (
    "Keras exports a TensorFlow SavedModel from the PyTorch backend only "
    "through torch_xla, which has no release for this PyTorch (2.13)"
)

# Op types that would mean randomness, control flow or state writes in a
# TensorFlow serving graph; StableHLO ops that would mean the same inside
# the program of a JAX export (threefry is xor and shifts).
RANDOM_OR_STATEFUL_TF_OPS = re.compile(
    r"Random|Multinomial|Shuffle|^(Stateless)?(If|Case|While)$|^Assign"
)
RANDOM_OR_BRANCHING_HLO_OPS = re.compile(r"rng|xor|shift|\.(case|if|while)$")


def randomize_weights(model: keras.Model, seed: int) -> None:
    """Weights and BatchNorm statistics away from their initial values, so
    that a reload that lost any of them shows."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            rng.uniform(0.5, 1.5, w.shape).astype("float32")
            if "variance" in w.path
            else rng.normal(0.0, 0.4, w.shape).astype("float32")
            for w in model.weights
        ]
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The three models saved, reloaded in a fresh process, exported and
    served in another: everything the tests below compare."""
    directory = tmp_path_factory.mktemp("every_layer")
    x = every_layer.inputs()
    np.save(directory / "inputs.npy", x)
    models, predicted, configs = {}, {}, {}
    for index, (name, make) in enumerate(every_layer.MODELS.items()):
        model = make()
        randomize_weights(model, seed=index)
        model.save(directory / f"{name}.keras")
        models[name] = model
        predicted[name] = model.predict(x, verbose=0)
        # As saved (an export traces nested models again, with other shapes).
        configs[name] = {
            "model": every_layer.config_json(model),
            "drop_layers": every_layer.drop_layers(model),
        }
    run_in_fresh_process(["-m", "tests.every_layer", str(directory)])
    for name, model in models.items():
        # ONNX export refuses a model never called (JAX's predict does not
        # count); a symbolic call does.
        model(keras.Input(every_layer.IMAGE_SHAPE))
        if BACKEND in SAVED_MODEL_BACKENDS:
            model.export(
                directory / "saved_model" / name,
                format="tf_saved_model",
                verbose=False,
            )
        (directory / "onnx").mkdir(exist_ok=True)
        model.export(directory / "onnx" / f"{name}.onnx", format="onnx", verbose=False)
    run_in_fresh_process([str(ROOT / "tests" / "serve_exported.py"), str(directory)])
    return SimpleNamespace(
        x=x,
        directory=directory,
        models=models,
        predicted=predicted,
        saved_configs=configs,
        loaded=dict(np.load(directory / "loaded.npz")),
        loaded_configs=json.loads((directory / "loaded.json").read_text()),
        served=dict(np.load(directory / "served.npz")),
        graphs=json.loads((directory / "served.json").read_text()),
    )


# --------------------------------------------------------------------------
# .keras files.


@pytest.mark.parametrize("name", list(every_layer.MODELS))
def test_keras_file_reloads_in_a_fresh_process(saved, name):
    reloaded, original = saved.loaded_configs[name], saved.saved_configs[name]
    assert reloaded["model"] == original["model"]
    # Every keras_drop layer, nested ones too, came back with its config.
    assert reloaded["drop_layers"] == original["drop_layers"]
    assert len(reloaded["drop_layers"]) >= 8
    np.testing.assert_array_equal(bits(saved.loaded[name]), bits(saved.predicted[name]))


def test_models_hold_every_layer_with_several_instances(saved):
    kinds = {}
    for model in saved.models.values():
        for layer in sublayers(model):
            if type(layer).__module__.startswith("keras_drop."):
                kinds.setdefault(type(layer).__name__, []).append(layer)
    assert sorted(kinds) == sorted(
        [
            "Cutout",
            "DropBlock1D",
            "DropBlock2D",
            "DropBlock3D",
            "DropConnectDense",
            "DropPath",
            "PatchDropout",
            "JoinDropPath",
            "LayerDrop",
            "StochasticDepth",
            "StochasticDepthBlock",
            "UniformDropout",
        ]
    )
    assert all(len(layers) >= 2 for layers in kinds.values())


def test_stochastic_depth_block_config_round_trip():
    block = StochasticDepthBlock(
        every_layer.conv_bn(4, name="branch"),
        0.35,
        shortcut=keras.layers.Conv2D(4, 1, name="projection"),
        rescale_at="training",
        seed=5,
        name="block",
    )
    config = block.get_config()
    assert (config["rate"], config["rescale_at"], config["seed"]) == (
        0.35,
        "training",
        5,
    )
    for rebuilt in (
        StochasticDepthBlock.from_config(config),
        keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(block)
        ),
    ):
        assert type(rebuilt) is StochasticDepthBlock
        assert json.dumps(rebuilt.get_config()) == json.dumps(config)
        assert rebuilt.residual is not block.residual
        assert rebuilt.residual.name == "branch"
        assert rebuilt.shortcut.name == "projection"
    serialized = keras.saving.serialize_keras_object(block)
    assert serialized["registered_name"] == "keras_drop>StochasticDepthBlock"


# --------------------------------------------------------------------------
# Exported artifacts.


@pytest.mark.backends(*SAVED_MODEL_BACKENDS, reason=SAVED_MODEL_REASON)
@pytest.mark.parametrize("name", list(every_layer.MODELS))
def test_saved_model_serves_predict_without_keras_drop(saved, name):
    assert not saved.graphs["keras_drop_imported"]
    first = saved.served[f"saved_model.{name}.0"]
    np.testing.assert_array_equal(
        bits(first), bits(saved.served[f"saved_model.{name}.1"])
    )
    np.testing.assert_allclose(first, saved.predicted[name], rtol=1e-6, atol=1e-6)


@pytest.mark.backends(*SAVED_MODEL_BACKENDS, reason=SAVED_MODEL_REASON)
@pytest.mark.parametrize("name", list(every_layer.MODELS))
def test_saved_model_holds_the_inference_path_only(saved, name):
    graph = saved.graphs[name]
    assert graph["state_unchanged"]  # no seed generator advanced
    if BACKEND == "tensorflow":
        assert not [op for op in graph["ops"] if RANDOM_OR_STATEFUL_TF_OPS.search(op)]
        assert "Conv2D" in graph["ops"]  # the graph is the model's own
        assert not graph["stablehlo_ops"]
    else:
        # One program for the outputs, one for their gradient.
        assert "XlaCallModule" in graph["ops"]
        assert not [op for op in graph["ops"] if re.search("Random|If|While", op)]
        for program in graph["stablehlo_ops"]:
            assert "stablehlo.convolution" in program
            assert not [op for op in program if RANDOM_OR_BRANCHING_HLO_OPS.search(op)]


@pytest.mark.parametrize("name", list(every_layer.MODELS))
def test_onnx_serves_predict_without_keras_drop(saved, name):
    assert not saved.graphs["keras_drop_imported"]
    first = saved.served[f"onnx.{name}.0"]
    np.testing.assert_array_equal(first, saved.served[f"onnx.{name}.1"])
    # ONNX Runtime's kernels round differently from the backend's.
    np.testing.assert_allclose(first, saved.predicted[name], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# Inference.


@pytest.mark.parametrize("name", list(every_layer.MODELS))
def test_inference_is_deterministic(saved, name):
    model, x = saved.models[name], saved.x
    np.testing.assert_array_equal(
        bits(model.predict(x, verbose=0)), bits(saved.predicted[name])
    )
    eager = model(x, training=False)
    np.testing.assert_array_equal(bits(model(x, training=False)), bits(eager))
    np.testing.assert_array_equal(bits(model(x)), bits(eager))


def test_inference_is_the_model_without_its_drop_layers():
    # The twin shares every weighted layer; each keras_drop layer is absent
    # (the identity), Stochastic Depth is `shortcut + (1 - rate) * residual`
    # with rescale_at="inference" and the plain sum otherwise, and
    # DropConnectDense is a Dense with its weights.
    model = every_layer.functional_model()
    randomize_weights(model, seed=7)
    twin = every_layer.functional_twin(model)
    x = every_layer.inputs(seed=1)
    expected = bits(twin(x, training=False))
    np.testing.assert_array_equal(bits(model(x, training=False)), expected)
    np.testing.assert_array_equal(bits(model(x)), expected)
    assert len(model.layers) - len(twin.layers) > 0


# --------------------------------------------------------------------------
# Bad input: a garbled saved config.


def _garbled_copy(source, target, layer_name, key, value):
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    [layer] = [
        layer
        for layer in config["config"]["layers"]
        if layer["config"]["name"] == layer_name
    ]
    layer["config"][key] = value
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


@pytest.mark.parametrize(
    "layer_name, key, value",
    [
        ("drop_path", "rate", 2.0),
        ("drop_block_paper", "rate", 1.0),
        ("drop_connect_head", "rate", "0.2"),
        ("drop_uniform", "beta", -1.0),
        ("drop_block_shared", "block_size", 0),
        ("drop_block_first", "data_format", "NCHW"),
        ("drop_cutout", "length", -3),
        ("drop_depth_row", "mode", "sideways"),
        ("drop_layer", "rate", 1.5),
        ("drop_join", "per_sample", "yes"),
    ],
)
def test_garbled_config_fails_to_load_naming_the_argument(
    saved, tmp_path, layer_name, key, value
):
    garbled = tmp_path / "garbled.keras"
    _garbled_copy(saved.directory / "functional.keras", garbled, layer_name, key, value)
    with pytest.raises(ValueError) as error:
        keras.saving.load_model(garbled)
    message = str(error.value)
    assert f"argument `{key}`" in message
    assert f"{key}={value!r}" in message
    assert repr(layer_name) in message


def test_unknown_argument_in_a_saved_config_fails_to_load(saved, tmp_path):
    garbled = tmp_path / "garbled.keras"
    _garbled_copy(
        saved.directory / "functional.keras", garbled, "drop_path", "rat", 0.1
    )
    with pytest.raises(ValueError, match=r"Unrecognized keyword.*'rat'"):
        keras.saving.load_model(garbled)
