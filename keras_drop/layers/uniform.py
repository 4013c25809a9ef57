"""UniformDropout ("Uout"): multiplicative uniform noise."""

from __future__ import annotations

from typing import Any

import keras

from keras_drop import _validation
from keras_drop import ops as drop_ops
from keras_drop.layers._base import DropLayer, strength_property


@keras.saving.register_keras_serializable(package="keras_drop")
class UniformDropout(DropLayer):
    """Uout: multiplies every unit by 1 + U(-beta, beta) during training.

    Dropout with drop rate p multiplies a unit by 0 or 1 / (1 - p). The mean
    is kept, but the second moment grows by 1 / (1 - p): a unit x of mean m
    and variance v has training variance (v + m^2) / (1 - p) - m^2 and
    inference variance v. A BatchNormalization after the dropout learns its
    moving variance from the training-time (larger) variance and meets the
    smaller one at inference, so it over-normalizes: Li et al. call this the
    variance shift, and it is why Dropout before BN often hurts (p = 0.5
    doubles the second moment).

    Uout's noise 1 + U(-beta, beta) also has mean 1, but variance beta^2 / 3:
    the second moment grows by the factor 1 + beta^2 / 3, e.g. 1.0033 at
    beta = 0.1 and 1.083 at beta = 0.5, against 1.11 and 2 for Dropout at
    p = 0.1 and 0.5. Li et al. (sec. 5) recommend it for that small shift,
    but the shift is small only because the noise is: any multiplicative
    noise of mean 1 and variance s^2 multiplies the second moment by
    1 + s^2, so Uout with Dropout's noise variance (beta^2 / 3 = p / (1 - p))
    shifts it exactly as much. Measured over three seeds on a small digits
    CNN with the noise after each Conv-BN-ReLU stage, before a max pool:
    Dropout(0.2) left the two BNs behind it with moving variances 1.43x and
    1.97x their inference variance and 0.81 test accuracy (0.97 without
    dropout); UniformDropout(0.866), the same noise variance, 1.60x and
    2.29x and 0.53. With the noise after the pool, both shifted by 1.1x to
    1.35x and kept 0.96 (`benchmarks/batchnorm_shift.py`; README, "Dropout
    before BatchNorm"). `keras_drop.recalibrate_batchnorm` removes the
    shift for either layer.

    At inference the layer is the identity; at `beta == 0` it is the
    identity in training too.

    `beta` can be assigned after the model is compiled (as
    `DropRateScheduler` does); compiled train steps apply the new value.

    Args:
        beta: float >= 0, the half-width of the uniform noise. Values above
            1 allow negative multipliers; the paper uses 0.1 to 0.5.
        seed: int in [0, 2**31 - 1] or `None`, the seed of the layer's
            random generator.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a float tensor of any shape.
        training: Python boolean, whether the layer should behave in training
            mode (adding noise) or in inference mode (returning `inputs`
            unchanged).

    Input shape:
        Any.

    Output shape:
        Same as the input.

    Example:

    >>> layer = keras_drop.UniformDropout(0.2, seed=0)
    >>> y = layer(keras.ops.ones((4, 8)), training=True)  # values in [0.8, 1.2]

    Reference:
        - [Li et al., 2019](https://arxiv.org/abs/1801.05134),
          "Understanding the Disharmony between Dropout and Batch
          Normalization by Variance Shift".
    """

    _strength_name = "beta"

    def __init__(self, beta: float, *, seed: int | None = None, **kwargs: Any):
        super().__init__(beta, seed=seed, **kwargs)

    def _validate_strength(self, value):
        return _validation.validate_non_negative(value, "beta")

    beta = strength_property(
        "The configured noise half-width; assigning it takes effect in "
        "already compiled steps."
    )

    def call(self, inputs, training=False):
        if not self._drops(training):
            return inputs
        return drop_ops.uniform_dropout(
            inputs, self._current_strength(), seed=self.seed_generator
        )
