"""Per-sample and per-batch path dropping: DropPath, StochasticDepth,
StochasticDepthBlock (which skips the dropped branch's computation) and the
linear decay rule of Stochastic Depth."""

from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

from keras_drop import _validation
from keras_drop import ops as drop_ops
from keras_drop.layers._base import RateLayer, RateSizesShape, in_monte_carlo_scope


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
        seed: int in [0, 2**31 - 1] or `None`, the seed of the layer's
            random generator.
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
        **kwargs: Any,
    ):
        super().__init__(rate, seed=seed, **kwargs)
        self.scale_by_keep = _validation.validate_bool(scale_by_keep, "scale_by_keep")

    def build(self, input_shape):
        _validation.check_min_rank(input_shape, 2, "DropPath")
        self.built = True

    def call(self, inputs, training=False):
        if not self._drops(training):
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
        seed: int in [0, 2**31 - 1] or `None`, the seed of the layer's
            random generator.
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
        **kwargs: Any,
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
        if self._drops(training):
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


@keras.saving.register_keras_serializable(package="keras_drop")
class StochasticDepthBlock(RateSizesShape, RateLayer):
    """Stochastic Depth that does not compute a dropped residual branch.

    Wraps a residual block: `residual` (any layer or model, e.g. a
    `keras.Sequential` of Conv2D, BatchNormalization and ReLU) and an
    optional projection `shortcut` layer (the identity when `None`). Two
    modes: `"batch"` skips the branch for the whole batch (the paper),
    `"subset"` for a random subset of its samples (per-sample drop path, as
    ViT, DeiT, Swin and DINOv2 train, without computing the dropped
    samples' branch).

    `mode="batch"` returns `shortcut(x) + b * residual(x)` with
    b ~ Bernoulli(1 - rate) drawn once per batch, as
    `StochasticDepth(mode="batch")`. When b = 0 the
    residual branch is not executed: the block holds a real conditional
    (`keras.ops.cond`: `tf.cond`, `jax.lax.cond`, a Python `if` on PyTorch),
    which XLA and `jax.jit` keep as a branch of the compiled step. This is
    the paper's speed-up: a 110-layer ResNet trained about 25% faster
    because dropped blocks cost nothing. `StochasticDepth`, like torchvision,
    timm and keras-cv, multiplies the branch by zero and still pays for it.

    Inference and rescaling follow `StochasticDepth`: with
    `rescale_at="inference"` (the paper) inference returns
    `shortcut(x) + (1 - rate) * residual(x)`; with `rescale_at="training"`
    a kept branch is scaled by 1 / (1 - rate) in training and inference
    returns `shortcut(x) + residual(x)`.

    State inside the branch: on a skipped step the branch's
    BatchNormalization moving statistics (and any other non-trainable state,
    such as a seed generator) are left untouched, as in the paper's Torch
    code, and its weights get a zero gradient; on a kept step they are
    updated exactly as the plain block would update them. To make this hold
    inside `jax.lax.cond`, whose branches must not write to state outside
    them, the branch runs statelessly inside the conditional (under a
    `keras.StatelessScope` holding the branch's variables) and both sides
    of the conditional return the branch's non-trainable state, updated or
    not, which the block then assigns. Losses the branch adds (activity
    regularizers) count only on kept steps. The shortcut always runs.

    One exception: JAX on CPU, where XLA runs convolution gradients inside a
    conditional many times slower than outside one; there the block computes
    the branch and selects the result (same outputs, state and gradients,
    the cost of `StochasticDepth`).

    `rate` is schedulable like every keras_drop rate (`DropRateScheduler`).

    Monte Carlo inference (`keras_drop.mc_predict`, `export_monte_carlo`)
    drops the branch at inference, with the branch's BatchNormalization on
    its moving statistics. There `mode="subset"` acts per sample, as
    `StochasticDepth(mode="row")`: each input's branch is dropped with
    probability `rate` (the applied rate, read from the rate variable) and
    a kept one is scaled by 1 / (1 - rate) with `rescale_at="training"`,
    whatever the batch; k kept samples per batch would make an input's
    drop probability depend on how many inputs share its batch (a batch
    of one would never drop).

    A TensorFlow limitation of `mode="batch"`: under XLA
    (`jit_compile=True`, and `"auto"` picks XLA), TensorFlow cannot
    compile the gradient of a conditional
    whose branch computes tensor shapes at run time, and fails with
    "must be a compile-time constant". Conv, BatchNormalization, pooling
    and `Dense` on rank-2 inputs are fine; `Dense` on rank >= 3 inputs
    with an unknown batch size (a transformer's MLP) is not, because
    TensorFlow lowers it to a `tensordot` with a run-time transpose. For
    such branches on TensorFlow compile with `jit_compile=False`, or use
    `mode="subset"` or `StochasticDepth`. JAX and PyTorch have no such
    limit.

    `mode="subset"`: each training step picks a uniformly random subset of
    exactly k = max(1, floor((1 - rate) B)) of the batch's B samples,
    without replacement, runs the branch on those k samples only, and adds
    its outputs to their shortcuts, scaled by B / k with
    `rescale_at="training"` (unscaled with `rescale_at="inference"`, and
    inference then adds `(1 - rate) * residual(x)`, as in batch mode).
    Every other sample returns its shortcut exactly. The branch's cost,
    forward and backward, falls to k / B of the full batch's (see
    `keras_drop.ops.drop_path_subset`). Shapes are static and there is no
    conditional, so the step compiles under XLA (rank-3 `Dense` branches
    included) and `jax.jit` (JAX on CPU included) and runs on PyTorch.
    With `rescale_at="training"` the expected training output is
    `shortcut(x) + residual(x)`, the multiply form's
    (`StochasticDepth(mode="row")`); with `"inference"` it is
    `shortcut(x) + k / B * residual(x)`. Unlike the multiply form, the
    number of kept samples does not vary from step to step.

    Small batches: the realized drop rate is 1 - k / B, not `rate`. The
    floor rounds the rate up to the next multiple of 1 / B, and k >= 1
    caps it at 1 - 1 / B, so a batch of 1 never drops (with
    `rescale_at="inference"` it trains with the full branch and infers
    with `1 - rate` of it). k and the realized drop rate, "k, 1 - k / B":

    | B  | rate 0.1     | rate 0.2    | rate 0.5 |
    |----|--------------|-------------|----------|
    | 1  | 1, 0 (!)     | 1, 0 (!)    | 1, 0 (!) |
    | 2  | 1, 0.5 (!)   | 1, 0.5 (!)  | 1, 0.5   |
    | 4  | 3, 0.25 (!)  | 3, 0.25     | 2, 0.5   |
    | 8  | 7, 0.125     | 6, 0.25     | 4, 0.5   |
    | 32 | 28, 0.125    | 25, 0.219   | 16, 0.5  |

    Where the realized rate differs from the configured `rate` by more
    than half of it (marked (!); the configured rate, so the low rates of
    a `DropRateScheduler` ramp do not count), the layer warns once, with
    a `UserWarning`, at the first training call whose batch size is known
    when it is traced (a batch size still `None` there, as in a
    TensorFlow step traced for any batch, cannot be checked). A
    `UserWarning` is how Keras itself flags a questionable setting, shown
    once and silenced with `warnings.filterwarnings`. Monte Carlo passes
    and inference never warn.

    - BatchNormalization inside the branch normalizes over, and updates
      its moving statistics from, the k selected samples only (a smaller
      batch); the branch's weights get gradients from those k samples only.
    - k is a shape. It comes from the applied rate (a Python value the
      layer keeps beside its rate variable) and the batch size when the
      train step is traced, and is fixed in that compiled step. A batch
      size unknown when traced (TensorFlow's `fit` traces with a `None`
      batch) gives a k computed at run time from the actual batch size,
      which XLA resolves when it compiles for a concrete batch; JAX and
      PyTorch always know it.
    - A scheduled rate: `DropRateScheduler` traces and compiles the train
      step again whenever a new rate changes k (on TensorFlow, whose step
      is traced with an unknown batch size, whenever the rate changes):
      with `update_freq="step"` and the default linear ramp that is up to
      B - k + 1 compilations over a run (B = 64, rate 0.4: 27), one per
      epoch with `update_freq="epoch"`. Eager steps (PyTorch's `fit`,
      `run_eagerly=True`) read the new k at once. A rate assigned by hand
      (`block.rate = 0.2`) after the train step is compiled reaches it
      after `model.make_train_function(force=True)` or a new `compile`.

    Args:
        residual: a `keras.layers.Layer` (a layer or a model), the residual
            branch. Its output must have the shape of the shortcut's.
        rate: float in [0, 1), the probability that the branch is dropped.
        shortcut: a `keras.layers.Layer` for a projection shortcut, or
            `None` (default) for the identity.
        mode: `"batch"` (default) or `"subset"`, see above.
        rescale_at: `"inference"` (default) or `"training"`, see above.
        seed: int in [0, 2**31 - 1] or `None`, the seed of the layer's
            random generator.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: the block's input tensor.
        training: Python boolean, whether the layer should behave in training
            mode or in inference mode.

    Input shape:
        Any shape of rank >= 1, batch first, that `residual` (and
        `shortcut`) accept.

    Output shape:
        The residual branch's output shape.

    Example:

    >>> rates = keras_drop.stochastic_depth_rates(54, 0.5)  # ResNet-110
    >>> block = keras_drop.StochasticDepthBlock(
    ...     keras.Sequential([
    ...         keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
    ...         keras.layers.BatchNormalization(),
    ...         keras.layers.ReLU(),
    ...         keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
    ...         keras.layers.BatchNormalization(),
    ...     ]),
    ...     rate=rates[0],
    ... )
    >>> y = block(keras.Input((32, 32, 16)))

    A transformer encoder block, per-sample drop path on both branches:

    >>> attention = ...  # a layer: LayerNormalization, then self-attention
    >>> mlp = keras.Sequential([
    ...     keras.layers.LayerNormalization(),
    ...     keras.layers.Dense(512, activation="gelu"),
    ...     keras.layers.Dense(128),
    ... ])
    >>> x = keras_drop.StochasticDepthBlock(
    ...     attention, 0.1, mode="subset", rescale_at="training")(x)
    >>> x = keras_drop.StochasticDepthBlock(
    ...     mlp, 0.1, mode="subset", rescale_at="training")(x)

    Reference:
        - [Huang et al., 2016](https://arxiv.org/abs/1603.09382)
        - [Oquab et al., 2023](https://arxiv.org/abs/2304.07193) (DINOv2's
          subset drop path, `drop_add_residual_stochastic_depth`)
    """

    def __init__(
        self,
        residual: keras.layers.Layer,
        rate: float = 0.5,
        *,
        shortcut: keras.layers.Layer | None = None,
        mode: str = "batch",
        rescale_at: str = "inference",
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(rate, seed=seed, **kwargs)
        self.supports_masking = False
        self.residual = _validate_sublayer(residual, "residual")
        self.shortcut = (
            None if shortcut is None else _validate_sublayer(shortcut, "shortcut")
        )
        self.mode = _validation.validate_choice(mode, ("batch", "subset"), "mode")
        self.rescale_at = _validation.validate_choice(
            rescale_at, ("inference", "training"), "rescale_at"
        )
        # Subset mode: the applied rate as a Python float (k is a shape, so
        # it cannot be read from the rate variable in a compiled step), the
        # batch sizes its training calls were traced with, and whether a new
        # rate changed k for one of them since the train step was traced.
        self._init_sized()

    def build(self, input_shape):
        _validation.check_min_rank(input_shape, 1, "StochasticDepthBlock")
        for layer in (self.residual, self.shortcut):
            if layer is not None and not layer.built:
                layer.build(input_shape)
        inputs = keras.KerasTensor(input_shape)
        shortcut_shape = (
            input_shape
            if self.shortcut is None
            else self.shortcut.compute_output_spec(inputs).shape
        )
        residual_shape = self.residual.compute_output_spec(inputs).shape
        if tuple(shortcut_shape) != tuple(residual_shape):
            raise ValueError(
                "`StochasticDepthBlock` needs the residual branch and the "
                "shortcut to produce the same shape. Received: residual "
                f"output shape {tuple(residual_shape)}, shortcut output shape "
                f"{tuple(shortcut_shape)} (input shape {tuple(input_shape)})."
            )
        self.built = True

    def call(self, inputs, training=False):
        _validation.check_min_rank(inputs.shape, 1, "StochasticDepthBlock")
        if self.shortcut is None:
            shortcut = inputs
        else:
            shortcut = self.shortcut(inputs, training=training)
        rate = self._current_strength()
        if not self._drops(training):
            residual = self.residual(inputs, training=False)
            if self.rescale_at == "training":
                return shortcut + residual
            return shortcut + residual * ops.cast(1.0 - rate, residual.dtype)
        if self.mode == "subset" and not training:
            # A Monte Carlo pass (it drops at inference only there): k would
            # depend on how many inputs share the batch (a batch of one never
            # drops), so each sample keeps its branch with probability
            # 1 - rate, as in row mode, at the rate variable's value (no
            # retrace for a scheduled rate). BatchNorm stays at inference.
            return drop_ops.stochastic_depth(
                shortcut,
                self.residual(inputs, training=False),
                rate,
                mode="row",
                scale_by_keep=self.rescale_at == "training",
                seed=self.seed_generator,
            )
        if self.mode == "subset":
            batch_size = inputs.shape[0]
            # A symbolic batch size (JAX shape inference or export) traces
            # no train step that a new rate would have to retrace.
            if not drop_ops._is_symbolic(batch_size):
                self._subset.batch_sizes.add(batch_size)
            self._warn_if_batch_skews_rate(batch_size, training)
            return drop_ops.drop_path_subset(
                inputs,
                lambda subset: self.residual(subset, training=True),
                self._subset.rate,
                shortcut=shortcut,
                scale_by_keep=self.rescale_at == "training",
                seed=self.seed_generator,
            )
        keep = keras.random.uniform((), seed=self.seed_generator) >= rate
        scale = 1.0 / (1.0 - rate) if self.rescale_at == "training" else None
        return self._add_branch_if(keep, inputs, shortcut, scale, training)

    def _warn_if_batch_skews_rate(self, batch_size: Any, training: Any) -> None:
        """Subset mode: warns once if a training batch of B samples, B known
        when traced, drops 1 - k / B of them where that differs from the
        configured rate by more than half of it (see the class docstring)."""
        if self._subset.warned or not training or in_monte_carlo_scope():
            return
        if not isinstance(batch_size, int):
            return
        rate = self._get_strength()
        k = drop_ops._subset_size(rate, batch_size)
        realized = 1.0 - k / batch_size
        if abs(realized - rate) <= rate / 2:
            return
        self._subset.warned = True
        warnings.warn(
            f"StochasticDepthBlock '{self.name}' (mode=\"subset\") runs its "
            f"branch on k = max(1, floor((1 - rate) * B)) = {k} of the B = "
            f"{batch_size} samples of a training batch: a drop rate of "
            f"{realized:.3g} where rate={rate:g}. Train with a larger batch, "
            'or use StochasticDepth(mode="row"), which drops each sample '
            "with probability `rate` at any batch size.",
            UserWarning,
            stacklevel=2,
        )

    def _add_branch_if(
        self, keep: Any, inputs: Any, shortcut: Any, scale: Any, training: Any
    ):
        """`shortcut + scale * residual(inputs)` if `keep`, else `shortcut`,
        computing the branch only when kept and updating its state only
        then. The branch gets `training` (false in a Monte Carlo pass, where
        only the drop is random)."""

        def add_branch():
            residual = self.residual(inputs, training=bool(training))
            if scale is not None:
                residual = residual * ops.cast(scale, residual.dtype)
            return shortcut + residual

        return _run_branch_if(self, self.residual, keep, add_branch, shortcut)

    def compute_output_shape(self, input_shape):
        return self.residual.compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, training=None):
        return self.residual.compute_output_spec(inputs)

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        config = {
            "residual": keras.saving.serialize_keras_object(self.residual),
            "shortcut": (
                None
                if self.shortcut is None
                else keras.saving.serialize_keras_object(self.shortcut)
            ),
            "mode": self.mode,
            "rescale_at": self.rescale_at,
        }
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StochasticDepthBlock:
        config = dict(config)
        config["residual"] = keras.saving.deserialize_keras_object(config["residual"])
        if config.get("shortcut") is not None:
            config["shortcut"] = keras.saving.deserialize_keras_object(
                config["shortcut"]
            )
        return super().from_config(config)


def _run_branch_if(
    owner: keras.layers.Layer,
    branch: keras.layers.Layer,
    keep: Any,
    run: Any,
    skipped_outputs: Any,
) -> Any:
    """`run()` if `keep`, else `skipped_outputs`, where `run` calls `branch`:
    the branch is computed only when kept (a real conditional) and its
    non-trainable state (BatchNormalization statistics, seed states) is
    updated only then. Losses the branch adds are added to `owner` on kept
    steps. `run()` must return a tensor of `skipped_outputs`' shape and
    dtype."""
    variables = branch.variables
    values = [variable.value for variable in variables]
    state = branch.non_trainable_variables
    state_values = [variable.value for variable in state]
    adds_losses = []

    def kept():
        with keras.StatelessScope(
            state_mapping=list(zip(variables, values, strict=True)),
            collect_losses=True,
        ) as scope:
            outputs = run()
        updated = [ops.cast(scope.get_current_value(v), v.dtype) for v in state]
        adds_losses.append(bool(scope.losses))
        return outputs, updated, _total(scope.losses)

    def skipped():
        outputs = skipped_outputs
        if keras.backend.backend() == "torch":
            # Eager autograd only reaches weights the loss depends on: a
            # zero-weighted term gives the branch's weights the zero
            # gradient TensorFlow and JAX give them through the
            # conditional (and a loss that requires a gradient when
            # every block of a step is skipped).
            outputs = outputs + _zero_term(
                [v.value for v in branch.trainable_variables], outputs.dtype
            )
        return outputs, state_values, _total([])

    if _conditional_is_slow():
        # The same result, state and gradients, without the skip.
        outputs, updated, loss = kept()
        outputs = ops.where(keep, outputs, skipped_outputs)
        updated = [
            ops.where(keep, new, old)
            for new, old in zip(updated, state_values, strict=True)
        ]
        loss = ops.where(keep, loss, 0.0)
    else:
        outputs, updated, loss = ops.cond(keep, kept, skipped)
    for variable, value in zip(state, updated, strict=True):
        variable.assign(value)
    if any(adds_losses):
        owner.add_loss(loss)
    return outputs


def _conditional_is_slow() -> bool:
    """Whether a conditional costs more than the branch it skips.

    JAX on CPU: XLA:CPU runs the gradient of a convolution inside a
    conditional far slower than outside one. Measured with jax 0.10.2 on an
    AMD EPYC (2 cores): `jax.grad` of a (64, 32, 32, 8) 3x3 convolution
    inside `lax.cond` 217 ms, outside 8.4 ms (the forward pass alone: 5.8
    vs 4.7 ms), so a block that skips is slower than one that multiplies.
    There `StochasticDepthBlock` computes the branch and selects, with the
    same outputs, state updates and gradients. TensorFlow (XLA or not),
    PyTorch, and JAX on an accelerator keep the conditional.
    """
    if keras.backend.backend() != "jax":
        return False
    return keras.distribution.list_devices()[0].split(":")[0].lower() == "cpu"


def _validate_sublayer(layer: Any, name: str) -> keras.layers.Layer:
    if not isinstance(layer, keras.layers.Layer):
        raise _validation.invalid_value(
            name, "a `keras.layers.Layer` (a layer or a model)", layer
        )
    return layer


def _total(losses: list[Any]) -> Any:
    """The sum of a branch's losses as a float32 scalar (0 for none), so
    that both sides of the conditional return the same structure."""
    total = ops.zeros((), "float32")
    for loss in losses:
        total = total + ops.cast(loss, "float32")
    return total


def _zero_term(weights: list[Any], dtype: Any) -> Any:
    total = ops.zeros((), dtype)
    for weight in weights:
        total = total + ops.cast(ops.sum(weight), dtype)
    return total * ops.cast(0.0, dtype)


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
