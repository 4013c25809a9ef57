"""Per-sample and per-batch path dropping: DropPath, StochasticDepth and the
linear decay rule of Stochastic Depth."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_drop import _validation
from keras_drop import ops as drop_ops
from keras_drop.layers._base import RateLayer


@keras.saving.register_keras_serializable(package="keras_drop")
class DropPath(RateLayer):
    """Drops a sample's whole input (a residual branch) with probability `rate`.

    Per sample, all or nothing: during training each sample's input is
    zeroed with probability `rate` and, with `scale_by_keep=True`, a kept
    sample is scaled by 1 / (1 - rate), so the expected output is the input.
    Placed on a residual branch (`x + DropPath(rate)(branch(x))`), a dropped
    sample sees the shortcut alone: the network is, per sample, shallower.
    At inference the layer is the identity.

    `rate` can be assigned after the model is compiled (as
    `DropRateScheduler` does); compiled train steps apply the new value.

    Args:
        rate: float in [0, 1), the probability that a sample is dropped.
        scale_by_keep: if `True` (default), kept samples are scaled by
            1 / (1 - rate).
        seed: int or `None`, the seed of the layer's random generator.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a float tensor of rank >= 2, batch first.
        training: Python boolean, whether the layer should behave in training
            mode (dropping samples) or in inference mode (returning `inputs`
            unchanged).

    Input shape:
        Any shape of rank >= 2, batch first.

    Output shape:
        Same as the input.

    Example:

    >>> x = keras.Input((32, 32, 64))
    >>> branch = keras.layers.Conv2D(64, 3, padding="same")(x)
    >>> y = keras.layers.Add()([x, keras_drop.DropPath(0.1)(branch)])

    Reference:
        - [Larsson et al., 2016](https://arxiv.org/abs/1605.07648)
          (FractalNet, "drop-path"); timm's `DropPath`.
    """

    def __init__(
        self,
        rate: float,
        *,
        scale_by_keep: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(rate, seed=seed, **kwargs)
        self.scale_by_keep = _validation.validate_bool(scale_by_keep, "scale_by_keep")

    def build(self, input_shape):
        _validation.check_min_rank(input_shape, 2, "DropPath")
        self.built = True

    def call(self, inputs, training=False):
        if not training:
            return inputs
        return drop_ops.drop_path(
            inputs,
            self._current_strength(),
            scale_by_keep=self.scale_by_keep,
            seed=self.seed_generator,
        )

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        return {**base_config, "scale_by_keep": self.scale_by_keep}


@keras.saving.register_keras_serializable(package="keras_drop")
class StochasticDepth(RateLayer):
    """Stochastic Depth: adds a residual branch to its shortcut, or not.

    Called on `[shortcut, residual]`. During training it returns
    `shortcut + b * residual` with b ~ Bernoulli(1 - rate): the whole
    residual block is skipped with probability `rate`. b is drawn once per
    batch with `mode="batch"` (the paper: the whole mini-batch skips the
    block) or once per sample with `mode="row"` (torchvision's "row",
    timm's per-sample drop path).

    The expected training output is `shortcut + (1 - rate) * residual`, so
    one of the two phases must be rescaled:

    - `rescale_at="inference"` (the paper, keras-cv, TensorFlow Addons):
      training adds `b * residual`; inference returns
      `shortcut + (1 - rate) * residual`.
    - `rescale_at="training"` (timm, torchvision): training adds
      `b * residual / (1 - rate)`; inference returns `shortcut + residual`,
      so a trained model runs as a plain residual network.

    Both phases use the layer's current rate, so a rate changed during
    training (`DropRateScheduler`) is matched at inference. At rate 0 the
    output is exactly `shortcut + residual`.

    Use `stochastic_depth_rates` for the paper's linear decay of the rate
    with depth.

    Args:
        rate: float in [0, 1), the probability that the residual is dropped.
        mode: `"batch"` (default) or `"row"`.
        rescale_at: `"inference"` (default) or `"training"`, see above.
        seed: int or `None`, the seed of the layer's random generator.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a list `[shortcut, residual]` of two float tensors of the
            same shape.
        training: Python boolean, whether the layer should behave in training
            mode or in inference mode.

    Input shape:
        Two tensors of the same shape.

    Output shape:
        That shape.

    Example:

    >>> x = keras.Input((32, 32, 64))
    >>> branch = keras.layers.Conv2D(64, 3, padding="same")(x)
    >>> y = keras_drop.StochasticDepth(0.2)([x, branch])

    Reference:
        - [Huang et al., 2016](https://arxiv.org/abs/1603.09382)
    """

    def __init__(
        self,
        rate: float = 0.5,
        *,
        mode: str = "batch",
        rescale_at: str = "inference",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(rate, seed=seed, **kwargs)
        self.mode = _validation.validate_choice(mode, ("batch", "row"), "mode")
        self.rescale_at = _validation.validate_choice(
            rescale_at, ("inference", "training"), "rescale_at"
        )

    def build(self, input_shape):
        # One tensor's shape is a sequence of dimensions (ints or None); a
        # list of shapes holds sequences (tuples, TensorShapes, torch.Sizes).
        is_list = isinstance(input_shape, (list, tuple)) and not any(
            s is None or isinstance(s, int) for s in input_shape
        )
        _check_two_inputs(len(input_shape) if is_list else 1, input_shape)
        _validation.check_same_shape(input_shape[0], input_shape[1], "StochasticDepth")
        self.built = True

    def call(self, inputs, training=False):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            tensors = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            _check_two_inputs(len(tensors), [tuple(t.shape) for t in tensors])
        shortcut, residual = inputs
        rate = self._current_strength()
        if training:
            return drop_ops.stochastic_depth(
                shortcut,
                residual,
                rate,
                mode=self.mode,
                scale_by_keep=self.rescale_at == "training",
                seed=self.seed_generator,
            )
        if self.rescale_at == "training":
            return shortcut + residual
        return shortcut + residual * ops.cast(1.0 - rate, residual.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        config = {"mode": self.mode, "rescale_at": self.rescale_at}
        return {**base_config, **config}


def _check_two_inputs(count: int, shapes: Any) -> None:
    if count != 2:
        raise ValueError(
            "`StochasticDepth` must be called on a list of two tensors, "
            f"[shortcut, residual]. Received {count} input(s) of shape(s): "
            f"{shapes}"
        )


def stochastic_depth_rates(num_blocks: int, final_rate: float) -> list[float]:
    """The linear decay rule of Stochastic Depth, as drop rates.

    The paper keeps block l of L with probability p_l = 1 - l / L (1 - p_L):
    the first blocks, which extract low-level features every later block
    uses, are almost always kept, the last is dropped with probability
    `final_rate` = 1 - p_L. Returned as drop rates, block 1 to L:
    `[l / L * final_rate for l in 1..L]`. The paper uses `final_rate=0.5`.

    Args:
        num_blocks: L, the number of residual blocks, a positive int.
        final_rate: the drop rate of the last block, in [0, 1).

    Returns:
        A list of `num_blocks` Python floats.

    Example:

    >>> keras_drop.stochastic_depth_rates(4, 0.2)
    [0.05, 0.1, 0.15000000000000002, 0.2]

    Reference:
        - [Huang et al., 2016](https://arxiv.org/abs/1603.09382), eq. 4.
    """
    num_blocks = _validation.validate_positive_int(num_blocks, "num_blocks")
    final_rate = _validation.validate_rate(final_rate, "final_rate")
    return [block / num_blocks * final_rate for block in range(1, num_blocks + 1)]
