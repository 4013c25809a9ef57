"""DropConnectDense: a Dense layer whose kernel is dropped during training."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_drop import ops as drop_ops
from keras_drop.layers._base import RateProperty, ScheduledStrength


@keras.saving.register_keras_serializable(package="keras_drop")
class DropConnectDense(RateProperty, ScheduledStrength, keras.layers.Dense):
    """A `Dense` layer whose kernel, not its output, is dropped in training.

    DropConnect generalizes Dropout from units to connections: during
    training every kernel entry is zeroed with probability `rate` and the
    kept entries are scaled by 1 / (1 - rate), so the expected kernel (and
    output) is unchanged. One mask is drawn per step and shared by the whole
    batch (per-sample masks would need a kernel per sample, the batch times
    the memory). At inference the layer is exactly `keras.layers.Dense`.

    `rate` can be assigned after the model is compiled (as
    `DropRateScheduler` does); compiled train steps apply the new value.

    Args:
        units: positive int, the output dimension.
        rate: float in [0, 1), the probability that a kernel entry is
            dropped.
        seed: int in [0, 2**31 - 1] or `None`, the seed of the layer's
            random generator.
        **kwargs: every other `keras.layers.Dense` argument (`activation`,
            `use_bias`, initializers, regularizers, constraints, `name`,
            `dtype`, ...).

    Call arguments:
        inputs: a float tensor `(..., input_dim)`.
        training: Python boolean, whether the kernel is dropped.

    Input shape:
        `(..., input_dim)`.

    Output shape:
        `(..., units)`.

    Example:

    >>> layer = keras_drop.DropConnectDense(64, rate=0.3, activation="relu")
    >>> y = layer(keras.random.normal((8, 32)), training=True)

    Reference:
        - [Wan et al., 2013](https://proceedings.mlr.press/v28/wan13.html),
          "Regularization of Neural Networks using DropConnect".
    """

    def __init__(
        self, units: int, rate: float, *, seed: int | None = None, **kwargs: Any
    ):
        super().__init__(units, **kwargs)
        self._init_strength(rate, seed)

    def call(self, inputs, training=None):
        if not self._drops(training):
            return super().call(inputs)
        if self.quantization_mode is not None:
            raise ValueError(
                "`DropConnectDense` cannot drop a quantized kernel "
                f"(quantization_mode={self.quantization_mode!r}); call it "
                "with training=False."
            )
        kernel = ops.convert_to_tensor(self.kernel)
        kernel = drop_ops.drop_connect(
            kernel, self._current_strength(), seed=self.seed_generator
        )
        x = ops.matmul(inputs, kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x
