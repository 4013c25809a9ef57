"""Cutout: square patches of each image filled with a constant."""

from __future__ import annotations

from typing import Any

import keras

from keras_drop import _validation
from keras_drop import ops as drop_ops
from keras_drop.layers._base import ArgumentErrorsOnLoad
from keras_drop.layers._keras_internals import DataLayer, called_on_its_own
from keras_drop.layers._replicas import SeedGenerator


@keras.saving.register_keras_serializable(package="keras_drop")
class Cutout(ArgumentErrorsOnLoad, DataLayer):
    """Cutout: fills `n_holes` square patches of each image with `fill_value`.

    The paper's semantics (not `keras.layers.RandomErasing`'s): each image
    gets `n_holes` patches of side `length`, each centre drawn uniformly over
    the whole image, independently per image and per hole. A patch that
    crosses the border is clipped, so border patches are smaller and the
    network also sees partly occluded objects at the edges. Patches cover
    all channels.

    An augmentation layer, on Keras' convention: active with
    `training=True` (as in `fit`), the identity with `training=False` (as in
    `predict` and `evaluate`). With `training` unset, it is active when
    called on its own (`Cutout(16)(images)`, `dataset.map(Cutout(16))`)
    and the identity inside a model: a model exported with `model.export`
    serves exactly what `predict` returns. In a `Sequential` augmentation
    pipeline mapped over a dataset, pass `training=True` explicitly.

    It works in a `tf.data` pipeline under every backend, like Keras' own
    augmentation layers: there it computes with TensorFlow ops.

    Args:
        length: the patch side: an int number of pixels, or a float in
            (0, 1], a fraction of the image's shorter side (rounded, at least
            one pixel). The paper uses 16 px on CIFAR-10 (half the image),
            8 px on CIFAR-100, 20 px on SVHN.
        n_holes: patches per image, a positive int (default 1).
        fill_value: the value written into the patches (default 0.0; the
            paper cuts out normalized images, so 0 is the dataset mean).
        data_format: `"channels_last"`, `"channels_first"` or `None` (the
            value of `keras.config.image_data_format()`).
        seed: int in [0, 2**31 - 1] or `None`, the seed of the layer's
            random generator.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: an image or a batch of images.
        training: Python boolean or `None`, see above.

    Input shape:
        3D `(height, width, channels)` or 4D `(batch, height, width,
        channels)` with `data_format="channels_last"`; channels first with
        `"channels_first"`.

    Output shape:
        Same as the input.

    Example:

    >>> images = keras.random.uniform((8, 32, 32, 3))
    >>> augmented = keras_drop.Cutout(16, seed=0)(images)  # active on its own

    Reference:
        - [DeVries & Taylor, 2017](https://arxiv.org/abs/1708.04552)
    """

    def __init__(
        self,
        length: int | float,
        *,
        n_holes: int = 1,
        fill_value: float = 0.0,
        data_format: str | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.length = _validation.validate_length(length)
        self.n_holes = _validation.validate_positive_int(n_holes, "n_holes")
        self.fill_value = _validation.validate_finite(fill_value, "fill_value")
        self.data_format = _validation.standardize_data_format(data_format)
        self.seed = _validation.validate_seed(seed)
        self.seed_generator = SeedGenerator(self.seed)
        self.supports_masking = False

    @property
    def generator(self) -> SeedGenerator:
        # The name `DataLayer` looks up; a property, so the generator is
        # tracked once, as `seed_generator`.
        return self.seed_generator

    def build(self, input_shape):
        # In a tf.data pipeline under another backend the shape arrives as
        # None; `call` checks the rank of the tensor itself.
        if input_shape is not None:
            _validation.check_image_rank(input_shape, "Cutout", self.data_format)
        self.built = True

    def call(self, inputs, training=None):
        if training is None:
            training = called_on_its_own(self)
        if not training:
            return inputs
        _validation.check_image_rank(inputs.shape, "Cutout", self.data_format)
        return drop_ops._cutout(
            inputs,
            self.length,
            self.n_holes,
            self.fill_value,
            self.data_format,
            self._get_seed_generator(self.backend.name),
            self.backend,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        config = {
            "length": self.length,
            "n_holes": self.n_holes,
            "fill_value": self.fill_value,
            "data_format": self.data_format,
            "seed": self.seed,
        }
        return {**base_config, **config}
