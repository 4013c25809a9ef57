"""The engine of the recipes: copying a model while its graph is rebuilt.

A recipe (`add_stochastic_depth`, `add_dropblock`) is a module with one
public function that checks its arguments and the model (`check_model`),
subclasses `Rewriter` to replace or add layer calls in `call_layer` as
`keras.models.clone_model` rebuilds the graph (reading the structure
built so far from the `Dataflow` it is handed), gives inserted layers the
dtype policy (`dtype_next_to`, `merge_dtype`), data format
(`data_format_next_to`) and seed (`Rewriter.next_seed`) of their place,
and logs what it did (`Rewriter.changes`, `log_changes`).

Every record is logged on the `keras_drop.recipes` logger, the one the
documentation tells users to configure, whichever module of the package
logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_drop import _validation
from keras_drop.layers import DropPath, StochasticDepth
from keras_drop.layers._keras_internals import (
    Functional,
    functional_graph,
    graph_calls,
)
from keras_drop.recipes._dataflow import Dataflow

__all__ = [
    "Rewriter",
    "all_layers",
    "check_model",
    "compile_like",
    "copy_from_config",
    "copy_model",
    "data_format_next_to",
    "dtype_next_to",
    "graph_operations",
    "graphs",
    "is_sample_drop",
    "log_changes",
    "logger",
    "merge_dtype",
    "nothing_selected",
    "offset_seed",
    "selector",
]

logger = logging.getLogger("keras_drop.recipes")


class Rewriter:
    """Copies a functional or Sequential model, nested models included,
    through `clone_model`; subclasses change layer calls in `call_layer`.

    A subclass records each layer it inserts with `insert`, with the
    original drops that layer replaces; `changes` then says what was
    inserted and replaced, for `log_changes`. `next_seed` gives inserted
    layers the seeds `seed`, `seed + 1`, ... in depth order.
    """

    def __init__(self, model: keras.Model, *, seed: int | None = None):
        self.seed = seed
        self.inserted: list[Any] = []  # the inserted layers, in depth order
        # Per inserted layer: the original drops it replaces.
        self.replaces: list[list[Any]] = []
        self._copies: dict[int, Any] = {}  # id(original layer) -> its copy
        self._originals: dict[int, Any] = {}  # id(copy) -> original layer
        self._weight_pairs: list[tuple[Any, Any]] = []
        self._lengths: dict[int, int] = {}  # id(rewritten model) -> depth
        # Inserted layers get names no layer of any level has: Keras refuses
        # a model with two operations of one name.
        self._names = {layer.name for layer in all_layers(model)}

    def rewrite(self, model: keras.Model) -> keras.Model:
        new_model = self._rewrite(model)
        for original, copy in self._weight_pairs:
            copy.set_weights(original.get_weights())
        return new_model

    def call_layer(
        self, layer: Any, original: Any, args: tuple, kwargs: dict, flow: Dataflow
    ) -> Any:
        """Call `layer` (the copy of `original`) on `args` in the new graph."""
        return layer(*args, **kwargs)

    def copy_of(self, layer: Any) -> Any:
        """The copy of an original layer."""
        return self._copies[id(layer)]

    def leave_out(self, original: Any) -> None:
        """Records that the copy of `original` is not called in the new
        model (a pruned layer): its weights are not copied."""
        self._weight_pairs = [
            pair for pair in self._weight_pairs if pair[0] is not original
        ]

    def copy_weights(self, original: Any, copy: Any) -> None:
        """Gives `copy`, a layer made in `call_layer`, the weights of
        `original` once the new model is built."""
        self._weight_pairs.append((original, copy))

    def next_seed(self) -> int | None:
        """The seed of the next inserted layer."""
        return offset_seed(self.seed, len(self.inserted))

    def insert(self, layer: Any, replaced: Sequence[Any] = ()) -> int:
        """Records `layer` as inserted, in place of the original drops
        `replaced` (more can be added to `replaces[index]` later); returns
        its index."""
        self.inserted.append(layer)
        self.replaces.append(list(replaced))
        return len(self.inserted) - 1

    def changes(self, new_model: keras.Model) -> tuple[list[str], dict[str, str]]:
        """What the rewrite that gave `new_model` did: the names of the
        layers inserted where there was no drop, and `{replaced drop:
        what replaced it}`. A replaced drop whose output also feeds another
        layer stays there, and what replaced it counts as inserted."""
        kept = {id(layer) for layer in all_layers(new_model)}
        replaced = {
            old.name: layer.name
            for layer, olds in zip(self.inserted, self.replaces, strict=True)
            for old in olds
            if id(self.copy_of(old)) not in kept
        }
        inserted = [
            layer.name for layer in self.inserted if layer.name not in replaced.values()
        ]
        return inserted, replaced

    def fresh_name(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ...: the first name that no layer
        of the model (at any level) and no inserted layer has."""
        name, count = base, 1
        while name in self._names:
            name, count = f"{base}_{count}", count + 1
        self._names.add(name)
        return name

    def _rewrite(self, model: keras.Model) -> keras.Model:
        flow = Dataflow()

        def call_function(layer, *args, **kwargs):
            original = self._originals.get(id(layer), layer)
            outputs = self.call_layer(layer, original, args, kwargs, flow)
            flow.record(
                keras.tree.flatten((args, kwargs)),
                keras.tree.flatten(outputs),
                self._lengths.get(id(layer), 1),
                original,
            )
            return outputs

        new_model = keras.models.clone_model(
            _as_functional(model),
            clone_function=self._copy,
            call_function=call_function,
        )
        self._lengths[id(new_model)] = max(flow.depth(), 1)
        if not model.trainable:
            new_model.trainable = False
        return new_model

    def _copy(self, layer: Any) -> Any:
        # One copy per layer, whichever level it appears at, so that a layer
        # shared within the model stays shared in the new one.
        if id(layer) in self._copies:
            return self._copies[id(layer)]
        if isinstance(layer, (Functional, keras.Sequential)):
            copy = self._rewrite(layer)
        elif isinstance(layer, keras.layers.Layer):
            copy = copy_from_config(
                layer,
                "layer",
                ": the rewrite rebuilds every layer with "
                "`from_config(get_config())`, as `keras.models.clone_model` "
                "does. Give the layer a `get_config()` that covers its "
                "arguments.",
            )
            self._weight_pairs.append((layer, copy))
        else:
            copy = layer  # a stateless operation, such as `keras.ops.add`
        self._copies[id(layer)] = copy
        self._originals[id(copy)] = layer
        return copy


def selector(
    where: Any, model: keras.Model, example: str, extra_names: Sequence[str] = ()
) -> Callable[[Any], bool]:
    """The predicate a recipe's `where` stands for: `where` itself if it is
    callable, else membership in its list of layer names, each of which
    must name a layer of `model` (or be one of `extra_names`, layers a
    recipe reaches outside the graph). `example` shows a valid `where`."""
    if callable(where):
        return where
    if (
        isinstance(where, Sequence)
        and not isinstance(where, str)
        and all(isinstance(name, str) for name in where)
    ):
        names = set(where)
        known = {layer.name for layer in all_layers(model)} | set(extra_names)
        unknown = sorted(names - known)
        if unknown:
            raise _validation.invalid_value(
                "where",
                f"names of layers of model '{model.name}' (input layers "
                f"excluded); these name no layer: {unknown}",
                where,
            )
        return lambda layer: layer.name in names
    raise _validation.invalid_value(
        "where",
        "a callable `where(layer) -> bool` or a list of layer names, such "
        f"as {example}",
        where,
    )


def nothing_selected(where: Any, model: keras.Model) -> ValueError:
    """The error of a `where` that selected no layer of `model`."""
    return _validation.invalid_value(
        "where",
        f"a selection of at least one layer of model '{model.name}' "
        "(input layers cannot be selected); it selected none",
        where,
    )


def copy_from_config(layer: keras.layers.Layer, kind: str, why: str) -> Any:
    """`layer` (a `kind`: "layer" or "model") rebuilt from its config; a
    ValueError saying `why` the copy was needed where it cannot be."""
    try:
        return layer.__class__.from_config(layer.get_config())
    except Exception as error:
        raise ValueError(
            f"Could not copy {kind} '{layer.name}' of type "
            f"{type(layer).__name__} from its config{why} ({error})"
        ) from error


def copy_model(model: keras.Model, why: str) -> keras.Model:
    """`model` rebuilt from its own config, with its weights, frozen if it
    was: the copy a recipe edits where it cannot rewrite the graph."""
    copy = copy_from_config(model, "model", why)
    copy.set_weights(model.get_weights())
    if not model.trainable:
        copy.trainable = False
    return copy


def compile_like(model: keras.Model, copy: keras.Model) -> None:
    """Compiles `copy` as `model` was, unless it compiled itself (a keras-hub
    task built from its config does)."""
    if model.compiled and not copy.compiled:
        copy.compile_from_config(model.get_compile_config())


def all_layers(model: keras.Model) -> list[Any]:
    """Every layer of `model` and of the models nested in it, inputs aside."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(all_layers(layer))
    return layers


def _as_functional(model: keras.Model) -> keras.Model:
    if isinstance(model, keras.Sequential):
        # A built Sequential model holds a functional graph of its layers;
        # `clone_model` accepts a `call_function` for functional models only.
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


def check_model(model: Any, function: str) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`{function}` expects a `keras.Model`. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        if not model.built:
            raise ValueError(
                f"`{function}` needs a built Sequential model, one that starts "
                "with `keras.Input(shape)`. Received: the unbuilt Sequential "
                f"model '{model.name}'"
            )
        return
    if not isinstance(model, Functional):
        raise ValueError(
            f"`{function}` rewrites the layer graph of a functional or "
            "Sequential model, and a subclassed model has no such graph: its "
            "`call` is Python code that Keras cannot see into. Build the model "
            "with the functional API, or use keras_drop layers in its `call`. "
            f"Received: model '{model.name}' of type {type(model).__name__}"
        )


def dtype_next_to(layer: Any, flow: Dataflow | None = None, tensor: Any = None):
    """The dtype policy of a layer inserted next to `layer`: the same compute
    dtype, so that the new model computes what the original did. Next to an
    operation (which has no policy), that of the layer computing `tensor`,
    else `tensor`'s dtype."""
    if not isinstance(layer, keras.layers.Layer):
        producer = None if flow is None else flow.producer(tensor)
        if producer is None or not isinstance(producer[0], keras.layers.Layer):
            return tensor.dtype
        layer = producer[0]
    policy = layer.dtype_policy
    if type(policy) is keras.dtype_policies.DTypePolicy:
        return policy
    # A quantized policy describes weights, which inserted layers lack.
    return layer.compute_dtype


def merge_dtype(original: Any, flow: Dataflow, addends: Sequence[Any]):
    """The dtype policy of a merge that replaces the addition `original`:
    the addition's own. An `Add` layer casts its inputs to its compute
    dtype; an add operation computes in its inputs' promoted dtype (float32
    when either is float32, as for a float32 model input plus a float16
    branch under `mixed_float16`), which the neighbouring layer's policy
    may not compute in."""
    if isinstance(original, keras.layers.Layer):
        return dtype_next_to(original)
    dtype = keras.backend.result_type(*(t.dtype for t in addends))
    policy = dtype_next_to(original, flow, addends[1])
    compute = getattr(policy, "compute_dtype", policy)
    return policy if keras.backend.standardize_dtype(compute) == dtype else dtype


def _declared_data_format(layer: Any) -> str | None:
    """The image data format `layer` declares: its `data_format`, or for a
    `BatchNormalization` on rank 4 inputs, its axis (1: channels first, 3:
    channels last)."""
    data_format = getattr(layer, "data_format", None)
    if data_format in ("channels_first", "channels_last"):
        return data_format
    if isinstance(layer, keras.layers.BatchNormalization):
        ndim = getattr(layer.input_spec, "ndim", None)
        if ndim == 4:
            return {1: "channels_first", 3: "channels_last"}.get(layer.axis % 4)
    return None


def data_format_next_to(
    followed: Sequence[Any], flow: Dataflow, tensors: Sequence[Any]
) -> str:
    """The data format of a layer inserted after `followed` (original
    layers, the nearest first), on data computed from `tensors`: the first
    that `followed` declare, else that of the nearest layer upstream of
    `tensors` that declares one, else `keras.config.image_data_format()`."""
    symbolic = [t for t in tensors if isinstance(t, keras.KerasTensor)]
    for layer in (*followed, *flow.upstream(*symbolic)):
        data_format = _declared_data_format(layer)
        if data_format is not None:
            return data_format
    return keras.config.image_data_format()


def offset_seed(seed: int | None, offset: int) -> int | None:
    """The seed of the inserted layer number `offset`: `seed + offset`,
    wrapped into the range every backend accepts."""
    if seed is None:
        return None
    return (seed + offset) % (_validation.MAX_SEED + 1)


def is_sample_drop(layer: Any) -> bool:
    """Whether `layer`, called on one tensor, drops whole samples: a keras_drop
    `DropPath`, a `Dropout` whose `noise_shape` keeps only the batch axis
    (keras.applications EfficientNet/V2 and keras-hub's), or a layer whose
    class is named `...DropPath` or `StochasticDepth` (keras.applications
    ConvNeXt, keras-hub, ports of timm)."""
    if isinstance(layer, DropPath):
        return True
    if isinstance(layer, keras.layers.Dropout):
        shape = layer.noise_shape
        return shape is not None and len(shape) >= 2 and all(d == 1 for d in shape[1:])
    if isinstance(layer, StochasticDepth) or not isinstance(layer, keras.layers.Layer):
        return False
    name = type(layer).__name__
    return name.endswith("DropPath") or name == "StochasticDepth"


def log_changes(
    function: str,
    model: keras.Model,
    inserted: list[str],
    replaced: dict,
    *,
    blocks: str = "",
) -> None:
    """Logs what a recipe (`function`) did; the record carries `inserted`
    (names) and `replaced` ({replaced drop: what replaced it})."""
    logger.info(
        "%s on model '%s': %s%d drops inserted %s, %d replaced %s",
        function,
        model.name,
        blocks,
        len(inserted),
        inserted,
        len(replaced),
        replaced,
        extra={"inserted": inserted, "replaced": replaced},
    )


def graphs(model: keras.Model) -> list[Any]:
    """The functional graphs of `model` and of the models nested in it,
    each once."""
    found, stack = {}, [model]
    while stack:
        graph = functional_graph(stack.pop())
        if graph is None or id(graph) in found:
            continue
        found[id(graph)] = graph
        stack.extend(op for op, _ in graph_calls(graph) if isinstance(op, keras.Model))
    return list(found.values())


def graph_operations(model: keras.Model) -> list[Any]:
    """The operations called in `model`'s graph and its nested models'."""
    return [op for graph in graphs(model) for op, _ in graph_calls(graph)]
