"""Measure and repair the variance shift of dropout before BatchNormalization.

During training, a `BatchNormalization` layer placed after a dropout-type
layer accumulates moving statistics of dropped-out activations. Dropout with
rate p keeps the mean of a unit but multiplies its second moment by
1 / (1 - p); at inference the dropout is the identity, the BN's inputs have
a smaller variance than its moving variance, and the BN shrinks them. Each
following BN inherits the error and adds its own, so the shift compounds
with depth (Li et al. 2019 call it the variance shift).

`variance_shift` measures it and `recalibrate_batchnorm` removes it by
replacing every BN's moving mean and variance with the exact population
statistics of the inputs it receives at inference.

How the statistics are gathered: the model's graph (functional or
Sequential, nested functional and Sequential models included) is walked to
find every call of a `BatchNormalization` layer and the symbolic tensor it
is called on. A probe, `keras.Model(model.input, [those tensors])`, shares
every layer and weight with the model, so it computes the very tensors the
BNs receive when the model runs; it is called with `training=False`, where
Keras' `Dropout` and every keras_drop layer are the identity. A BN inside a
nested model is reached by calling a probe of the nested model on the
tensor the nested model is called on. Per channel (the BN's `axis`, so
`channels_last` and `channels_first` alike), counts, means and sums of
squared deviations are accumulated in float64 and merged batch by batch
with Chan's parallel formula: every sample has the same weight, a ragged
last batch included, and the result does not depend on how the data is
batched.

The variance is the biased population variance, sum((x - mean)^2) / n:
what BN itself computes over a batch during training and what it expects in
`moving_variance` (it adds `epsilon` when it normalizes, so no epsilon is
folded in here).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np

from keras_drop import _validation
from keras_drop.layers import _keras_internals

__all__ = ["recalibrate_batchnorm", "variance_shift"]

# How an array given as `data` is sliced: Keras' default batch size. Any
# size gives the same statistics; it only bounds the memory of one pass.
ARRAY_BATCH_SIZE = 32


def variance_shift(
    model: keras.Model, data: Any, *, steps: int | None = None
) -> dict[str, float]:
    """The variance shift of every `BatchNormalization` layer of `model`.

    For each BN layer, per channel, the moving variance the layer holds
    divided by the variance of the inputs it receives at inference on
    `data`, both with the layer's `epsilon` added (as BN adds it when it
    normalizes, so a channel that is constant on `data` gives a finite
    ratio); the median over channels is returned.

    How to read it: at inference BN divides by sqrt(moving variance +
    epsilon), so a ratio r shrinks the layer's normalized outputs by about
    1 / sqrt(r) (0.71 at r = 2). Values near 1 are healthy. Values above 1
    appear after dropout-type layers, whose training-time noise inflated the
    moving variance; they grow with the rate and compound with depth. After
    `recalibrate_batchnorm(model, data)` the ratios on the same data are 1
    up to float32 rounding. A layer trained on other data than `data` (a
    shifted domain) can show values away from 1 without any dropout.

    The model runs with `training=False`: Keras' `Dropout` and every
    keras_drop layer are the identity, as at inference. Nothing is changed.

    Args:
        model: a functional or `Sequential` Keras model; BN layers inside
            nested functional or `Sequential` models are included.
        data: the inputs: a NumPy array (read in batches of 32), a
            `tf.data.Dataset`, or any iterable of batches (a list, a
            generator, a `keras.utils.PyDataset`, a torch `DataLoader`),
            each batch `x` or a tuple `(x, y)` or `(x, y, sample_weight)`
            of which only `x` is used. `x` has the structure the model is
            called on (an array, or a list or dict of arrays).
        steps: int or `None`, the most batches to read; `None` reads all
            of `data` (an infinite dataset needs `steps`).

    Returns:
        A dict from BN layer name to its median variance ratio (a Python
        float), in the order the model calls the layers. When two different
        BN layers share a name (in different nested models), their keys are
        prefixed with the names of the nested models, `"block/bn"`.

    Raises:
        ValueError: if `model` holds no `BatchNormalization`, if a BN cannot
            be reached (a subclassed model or layer), if `data` yields no
            samples or if `steps` is not a positive integer or `None`.

    Example:

    >>> shift = keras_drop.variance_shift(model, x_train[:1000])
    >>> shift  # {"batch_normalization": 1.0, "batch_normalization_1": 1.9}

    Reference:
        - [Li et al., 2019](https://arxiv.org/abs/1801.05134),
          "Understanding the Disharmony between Dropout and Batch
          Normalization by Variance Shift".
    """
    steps = _validation.validate_optional_positive_int(steps, "steps")
    graph, calls = _bn_calls(model)
    source = _BatchSource(data, steps)
    layers = _unique_layers(calls)
    moments = _measure(graph, calls, {id(layer) for layer in layers}, source)
    names = _names(calls)
    shift = {}
    for layer in layers:
        stats = moments[id(layer)]
        moving = _to_float64(layer.moving_variance)
        ratio = (moving + layer.epsilon) / (stats.variance + layer.epsilon)
        shift[names[id(layer)]] = float(np.median(ratio))
    return shift


def recalibrate_batchnorm(
    model: keras.Model, data: Any, *, steps: int | None = None
) -> None:
    """Re-estimates every BN's moving statistics exactly, at inference.

    Each `BatchNormalization` layer's `moving_mean` and `moving_variance`
    are replaced by the mean and the (biased, population) variance per
    channel of the inputs the layer receives when the model runs on `data`
    with `training=False`: Keras' `Dropout` and every keras_drop layer are
    then the identity, so the statistics are those the layer meets at
    inference and the variance shift of dropout before BN is gone.

    Layers are recalibrated in graph order: a BN is measured only after
    every BN its inputs depend on has been recalibrated, so it sees its
    predecessors as they will be at inference. BNs that do not depend on one
    another are measured in the same pass over `data`; a chain of k BNs
    takes k passes, each running the model up to the BNs being measured.
    Every sample weighs the same (an exact average, not the exponential
    moving average of training); statistics accumulate in float64, so the
    result does not depend on the batching and does not lose precision on
    large data. Trainable weights (gamma, beta) are left untouched; a
    layer with `renorm=True` also gets `moving_stddev = sqrt(variance +
    epsilon)`, as its training updates keep it.

    This is the "precise BN" of Wu and Johnson (2021): population
    statistics over many samples with equal weights, computed with the
    weights fixed, instead of the exponential average of batch statistics
    that training leaves. torch's `torch.optim.swa_utils.update_bn` and
    fvcore's `update_bn_stats` (the implementation that accompanies the
    paper) gather them with the BN layers in training mode, so every BN
    normalizes with batch statistics while it accumulates, and
    `update_bn` puts the whole model in training mode, dropout included: it
    re-estimates training-time statistics and keeps the variance shift
    (torch also averages per-batch, Bessel-corrected variances, one weight
    per batch). Here the model runs as at inference, so the shift is gone.

    `data` is read once per pass. Give data that yields the same samples
    on every pass (no random augmentation, no shuffle combined with
    `steps`); a one-shot iterator such as a generator is read once and its
    inputs are kept in memory for the following passes. Use data from the
    training distribution, a few thousand samples or more; Li et al.
    recalibrate on training data.

    Args:
        model: a functional or `Sequential` Keras model; BN layers inside
            nested functional or `Sequential` models are included.
        data: the inputs: a NumPy array (read in batches of 32), a
            `tf.data.Dataset`, or any iterable of batches (a list, a
            generator, a `keras.utils.PyDataset`, a torch `DataLoader`),
            each batch `x` or a tuple `(x, y)` or `(x, y, sample_weight)`
            of which only `x` is used (sample weights are ignored: every
            sample counts once).
        steps: int or `None`, the most batches to read in each pass;
            `None` reads all of `data` (an infinite dataset needs `steps`).

    Returns:
        None; the model's BN layers are updated in place.

    Raises:
        ValueError: if `model` holds no `BatchNormalization`, if a BN cannot
            be reached (a subclassed model or layer), if `data` yields no
            samples or if `steps` is not a positive integer or `None`.

    Example:

    >>> model.fit(x_train, y_train, epochs=30)  # Dropout before BN layers
    >>> keras_drop.variance_shift(model, x_train)  # {"bn1": 1.0, "bn2": 1.43, ...}
    >>> keras_drop.recalibrate_batchnorm(model, x_train)
    >>> keras_drop.variance_shift(model, x_train)  # every value 1.0

    Reference:
        - [Wu and Johnson, 2021](https://arxiv.org/abs/2105.07576),
          "Rethinking 'Batch' in BatchNorm" (precise BN).
        - [Li et al., 2019](https://arxiv.org/abs/1801.05134),
          "Understanding the Disharmony between Dropout and Batch
          Normalization by Variance Shift".
    """
    steps = _validation.validate_optional_positive_int(steps, "steps")
    graph, calls = _bn_calls(model)
    source = _BatchSource(data, steps)
    levels = _levels(calls)
    for level in sorted(set(levels.values())):
        wanted = {key for key, value in levels.items() if value == level}
        moments = _measure(graph, calls, wanted, source)
        for layer in _unique_layers(calls):
            if id(layer) not in wanted:
                continue
            stats = moments[id(layer)]
            layer.moving_mean.assign(stats.mean.astype(layer.moving_mean.dtype))
            layer.moving_variance.assign(
                stats.variance.astype(layer.moving_variance.dtype)
            )
            if getattr(layer, "renorm", False):
                stddev = np.sqrt(stats.variance + layer.epsilon)
                layer.moving_stddev.assign(stddev.astype(layer.moving_stddev.dtype))


# --- The graph: where each BN is called and on what -------------------------


@dataclasses.dataclass
class _Call:
    """One call of a BN layer, or of a nested model that calls BN layers.

    `inputs` is the symbolic tensor (or structure) the layer is called on, in
    the graph of the model that makes the call. `upstream` holds the ids of
    the BN layers those inputs depend on. A nested model's call holds the
    BN calls of its own graph in `inner`, and that graph in `graph`.
    """

    layer: Any
    inputs: Any
    upstream: frozenset[int]
    path: tuple[str, ...]
    graph: Any = None
    inner: list[_Call] = dataclasses.field(default_factory=list)


def _is_bn(layer: Any) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def _bn_ids(layer: Any) -> set[int]:
    return {id(sub) for sub in _keras_internals.sublayers(layer) if _is_bn(sub)}


def _bn_calls(model: Any) -> tuple[Any, list[_Call]]:
    """The graph of `model` and its BN calls; ValueError when there is none
    or when some BN cannot be reached through the graph."""
    if not isinstance(model, keras.layers.Layer):
        raise _validation.invalid_value("model", "a Keras model", model)
    every_bn = [sub for sub in _keras_internals.sublayers(model) if _is_bn(sub)]
    if _is_bn(model) or not every_bn:
        raise ValueError(
            f"The model `{model.name}` holds no BatchNormalization layer: there "
            "is no moving statistic to measure or recalibrate."
        )
    graph = _keras_internals.functional_graph(model)
    if graph is None:
        raise ValueError(
            f"Cannot probe the BatchNormalization layers of `{model.name}` "
            f"({type(model).__name__}): the inputs of its layers are only "
            "reachable in a functional or Sequential model. Build the model "
            "with the functional API or as a keras.Sequential (with an "
            "`Input`, or call `build` first)."
        )
    calls = _graph_bn_calls(graph, ())
    reached = {id(c.layer) for c in _flatten(calls)}
    missed = [layer.name for layer in every_bn if id(layer) not in reached]
    if missed:
        raise ValueError(
            f"Cannot probe BatchNormalization layers {missed} of `{model.name}`: "
            "they are called inside a subclassed layer or model, whose inputs "
            "are only reachable when every model holding a BN is functional "
            "or Sequential."
        )
    return graph, calls


def _graph_bn_calls(graph: Any, path: tuple[str, ...]) -> list[_Call]:
    calls = []
    for layer, inputs in _keras_internals.graph_calls(graph):
        if _is_bn(layer):
            upstream = _upstream(graph, inputs)
            calls.append(_Call(layer, inputs, upstream, path))
            continue
        inner_graph = _keras_internals.functional_graph(layer)
        if inner_graph is None or not _bn_ids(layer):
            continue  # A subclassed layer holding a BN is reported by the caller.
        inner = _graph_bn_calls(inner_graph, (*path, layer.name))
        if not inner:
            continue
        upstream = _upstream(graph, inputs)
        calls.append(_Call(layer, inputs, upstream, path, inner_graph, inner))
    return calls


def _upstream(graph: Any, inputs: Any) -> frozenset[int]:
    """The BN layers whose outputs `inputs` depends on (a nested model
    upstream counts with all its BN layers: a safe over-approximation)."""
    return frozenset(_bn_ids(keras.Model(graph.input, inputs)))


def _flatten(calls: list[_Call], upstream: frozenset[int] = frozenset()):
    """The BN calls, nested ones included, in the order the model makes
    them; a nested call's `upstream` also gets that of its model's call."""
    for call in calls:
        if call.inner:
            yield from _flatten(call.inner, upstream | call.upstream)
        else:
            yield dataclasses.replace(call, upstream=upstream | call.upstream)


def _unique_layers(calls: list[_Call]) -> list[Any]:
    layers, seen = [], set()
    for call in _flatten(calls):
        if id(call.layer) not in seen:
            seen.add(id(call.layer))
            layers.append(call.layer)
    return layers


def _names(calls: list[_Call]) -> dict[int, str]:
    """A key per BN layer: its name, or its nested path when two share it."""
    first = {}
    for call in _flatten(calls):
        first.setdefault(id(call.layer), call)
    counts: dict[str, int] = {}
    for call in first.values():
        counts[call.layer.name] = counts.get(call.layer.name, 0) + 1
    return {
        key: call.layer.name
        if counts[call.layer.name] == 1
        else "/".join((*call.path, call.layer.name))
        for key, call in first.items()
    }


def _levels(calls: list[_Call]) -> dict[int, int]:
    """Pass number per BN layer: one more than the BNs its inputs depend on.

    A longest-path labelling of the BN dependency graph; a BN shared between
    several calls takes the latest. Self-dependence (a shared BN whose later
    call depends on its earlier one) is ignored: such a layer is measured in
    one pass with its own earlier call not yet recalibrated.
    """
    flat = list(_flatten(calls))
    levels = {id(call.layer): 0 for call in flat}
    for _ in range(len(levels)):
        changed = False
        for call in flat:
            key = id(call.layer)
            before = [levels[u] for u in call.upstream if u != key and u in levels]
            level = 1 + max(before) if before else 0
            if level > levels[key]:
                levels[key], changed = level, True
        if not changed:
            break
    return levels


def _probe_outputs(calls: list[_Call], wanted: set[int]) -> list[tuple[Any, Any]]:
    """`(bn layer, symbolic input)` for the wanted BN calls, as tensors of the
    graph that holds `calls`; a nested model's BN inputs are reached by
    calling a probe of the nested graph on the nested model's input."""
    outputs = []
    for call in calls:
        if not call.inner:
            if id(call.layer) in wanted:
                outputs.append((call.layer, call.inputs))
            continue
        inner = _probe_outputs(call.inner, wanted)
        if not inner:
            continue
        probe = keras.Model(call.graph.input, [tensor for _, tensor in inner])
        lifted = probe(call.inputs)
        lifted = lifted if isinstance(lifted, (list, tuple)) else [lifted]
        outputs.extend(
            (layer, tensor) for (layer, _), tensor in zip(inner, lifted, strict=True)
        )
    return outputs


# --- The data and the statistics --------------------------------------------


class _Moments:
    """Per-channel count, mean and sum of squared deviations, in float64.

    Batches merge with Chan et al.'s parallel update, exact for any split:
    delta = mean_b - mean, mean += delta * n_b / n, and
    m2 += m2_b + delta^2 * n_a * n_b / n.
    """

    def __init__(self):
        self.count = 0
        self.mean = None
        self.m2 = None

    def update(self, values: np.ndarray, axis: int) -> None:
        values = np.asarray(values, dtype=np.float64)
        axis = axis % values.ndim
        channels = values.shape[axis]
        values = np.moveaxis(values, axis, -1).reshape(-1, channels)
        count = values.shape[0]
        if count == 0:
            return
        mean = values.mean(axis=0)
        m2 = np.square(values - mean).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + np.square(delta) * (self.count * count / total)
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.count


def _measure(
    graph: Any, calls: list[_Call], wanted: set[int], source: _BatchSource
) -> dict[int, _Moments]:
    """One pass over the data: the moments of the wanted BN layers' inputs."""
    outputs = _probe_outputs(calls, wanted)
    probe = keras.Model(graph.input, [tensor for _, tensor in outputs])
    moments = {id(layer): _Moments() for layer, _ in outputs}
    samples = 0
    for x in source:
        samples += _batch_size(x)
        values = probe(x, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        for (layer, _), value in zip(outputs, values, strict=True):
            moments[id(layer)].update(keras.ops.convert_to_numpy(value), layer.axis)
    if samples == 0:
        raise ValueError(
            "The `data` given to measure BatchNormalization statistics yielded "
            "no samples. Pass a non-empty array, dataset or iterable of batches."
        )
    return moments


def _to_float64(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


def _to_numpy(value: Any) -> Any:
    # The backend's own tensors (a GPU torch tensor, say) need the backend;
    # others (tf.data's eager tensors under JAX or torch) convert with NumPy.
    if keras.ops.is_tensor(value):
        return keras.ops.convert_to_numpy(value)
    return np.asarray(value)


def _batch_size(x: Any) -> int:
    leaves = keras.tree.flatten(x)
    return int(np.shape(leaves[0])[0]) if leaves else 0


def _is_array_like(data: Any) -> bool:
    return isinstance(data, np.ndarray) or keras.ops.is_tensor(data)


class _BatchSource:
    """The inputs `x` of `data`, as NumPy structures, at most `steps` batches
    per pass; readable as many times as there are passes."""

    def __init__(self, data: Any, steps: int | None):
        self.steps = steps
        if _is_array_like(data) or isinstance(data, dict):
            self.arrays = keras.tree.map_structure(_to_numpy, data)
            self.data = None
            self.cached = None
        elif isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
            raise _validation.invalid_value(
                "data",
                "a NumPy array, a tf.data.Dataset or an iterable of batches",
                data,
            )
        else:
            self.arrays = None
            self.data = data
            # A one-shot iterator (a generator) cannot be read again: keep
            # its inputs for the following passes.
            self.cached = list(self._read(data)) if iter(data) is data else None

    def _read(self, batches: Iterable[Any]) -> Iterator[Any]:
        # islice stops before reading a batch past `steps`: a one-shot
        # iterator keeps it for its owner.
        for batch in itertools.islice(batches, self.steps):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
            yield keras.tree.map_structure(_to_numpy, x)

    def _slices(self) -> Iterator[Any]:
        count = _batch_size(self.arrays)
        for start in range(0, count, ARRAY_BATCH_SIZE):
            yield keras.tree.map_structure(
                lambda a, s=start: a[s : s + ARRAY_BATCH_SIZE], self.arrays
            )

    def __iter__(self) -> Iterator[Any]:
        if self.arrays is not None:
            return self._read(self._slices())
        if self.cached is not None:
            return iter(self.cached)
        return self._read(self.data)
