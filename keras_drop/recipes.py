"""The papers' recipes applied to models users already have.

`add_stochastic_depth` and `add_dropblock` rebuild a functional (or
Sequential) model with `keras.models.clone_model`, replacing or adding layer
calls as the graph is rebuilt, and return a new functional model. Nested
functional and Sequential models are rebuilt the same way, so their layers
are rewritten too.

The returned model holds copies of the original layers (each rebuilt from
its config) with the original weights copied into them; the original model
is left untouched. Copies rather than the same layer objects, because a
layer shared by two models belongs to two graphs: training one model would
change the other, and `new_model.get_layer(name).output`, which a feature
extractor is built from, would still be the tensor of the original graph.
Like `clone_model` and `.keras` saving, this needs every layer to
round-trip through `get_config()`.

A residual merge is a two-input `Add` layer or add operation (`x + y`).
Which of its inputs is the shortcut is read from the structure of the
graph, never from argument order or layer names: the shortcut is the input
that is an ancestor of the other (an identity shortcut), or else the input
with the shorter path from their nearest common ancestor (a projection
shortcut, a 1x1 convolution and a batch norm against the residual branch's
stack). A nested model counts as many steps as its longest path.
"""

from __future__ import annotations

import collections
import logging
import re
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras

from keras_drop import _validation
from keras_drop.layers import (
    DropBlock1D,
    DropBlock2D,
    DropBlock3D,
    DropPath,
    StochasticDepth,
    stochastic_depth_rates,
)
from keras_drop.layers._keras_internals import (
    AddOperation,
    Functional,
    functional_graph,
    graph_call_inputs,
    graph_calls,
    held_attribute,
    replace_sublayer,
    sublayers,
    sublayers_in_order,
)

__all__ = ["add_dropblock", "add_stochastic_depth", "resnet50_groups_3_4"]

logger = logging.getLogger(__name__)


class _Dataflow:
    """The dataflow of one functional graph, recorded while it is rebuilt.

    For every tensor the rebuilt graph produces: the tensors its call
    consumed, the call's length (1 for a layer, the longest path through a
    rewritten nested model) and its position in call order. `clone_model`
    calls the layers of a graph in topological order, so positions order
    every tensor after the tensors it is computed from.

    Layers inserted by a rewrite are not recorded: a call and the layers
    inserted around it are one step, so the structure seen is the original
    model's.
    """

    def __init__(self):
        self._tensors: list[Any] = []  # keeps every id() below valid
        self._position: dict[int, int] = {}
        self._parents: dict[int, tuple[int, ...]] = {}
        self._length: dict[int, int] = {}
        # id(tensor) -> the original operation that computed it.
        self._operation: dict[int, Any] = {}
        # id(tensor) -> (original operation, its one input tensor), for
        # tensors computed from one tensor.
        self._producer: dict[int, tuple[Any, Any]] = {}

    def _see(self, tensor: Any) -> None:
        if id(tensor) not in self._position:
            self._position[id(tensor)] = len(self._tensors)
            self._tensors.append(tensor)

    def record(
        self,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
        length: int,
        operation: Any = None,
    ):
        inputs = [t for t in inputs if isinstance(t, keras.KerasTensor)]
        parents = tuple(id(t) for t in inputs)
        for tensor in inputs:
            self._see(tensor)
        for tensor in outputs:
            # A layer may hand an input back unchanged: it is not a new node.
            if not isinstance(tensor, keras.KerasTensor) or id(tensor) in parents:
                continue
            if id(tensor) in self._parents:
                continue
            self._see(tensor)
            self._parents[id(tensor)] = parents
            self._length[id(tensor)] = length
            self._operation[id(tensor)] = operation
            if len(inputs) == 1:
                self._producer[id(tensor)] = (operation, inputs[0])

    def producer(self, tensor: Any) -> tuple[Any, Any] | None:
        """`(original operation, input)` of the call that computed `tensor`
        from one tensor, or None."""
        return self._producer.get(id(tensor))

    def upstream(self, *tensors: Any) -> Iterator[Any]:
        """The original operations that computed `tensors` and the tensors
        they are computed from, nearest first (breadth first)."""
        queue = collections.deque(id(t) for t in tensors)
        seen = set(queue)
        while queue:
            node = queue.popleft()
            if node in self._operation:
                yield self._operation[node]
            for parent in self._parents.get(node, ()):
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)

    def _ancestors(self, tensor: Any) -> set[int]:
        """The ids of `tensor` and of every tensor it is computed from."""
        found, stack = {id(tensor)}, [id(tensor)]
        while stack:
            for parent in self._parents.get(stack.pop(), ()):
                if parent not in found:
                    found.add(parent)
                    stack.append(parent)
        return found

    def _longest_paths(self, source: int, within: set[int]) -> dict[int, int]:
        """Longest path length from `source` to each tensor of `within`
        (an ancestor set) that `source` reaches."""
        length = {source: 0}
        for node in sorted(within, key=self._position.__getitem__):
            reached = [length[p] for p in self._parents.get(node, ()) if p in length]
            if node != source and reached:
                length[node] = self._length[node] + max(reached)
        return length

    def depth(self) -> int:
        """The longest path through the recorded graph."""
        length: dict[int, int] = {}
        for node in sorted(self._position, key=self._position.__getitem__):
            parents = self._parents.get(node)
            length[node] = (
                self._length[node] + max((length[p] for p in parents), default=0)
                if parents is not None
                else 0
            )
        return max(length.values(), default=0)

    def shortcut_and_residual(self, first: Any, second: Any) -> list[Any] | None:
        """`[shortcut, residual]` for the two inputs of an addition, or None
        when the addition does not merge a residual branch into a shortcut:
        the same tensor twice, shapes that differ (a broadcast), inputs with
        no common ancestor, or two paths of equal length (nothing tells
        which is the shortcut)."""
        if first is second or tuple(first.shape) != tuple(second.shape):
            return None
        first_ancestors = self._ancestors(first)
        second_ancestors = self._ancestors(second)
        if id(first) in second_ancestors:
            return [first, second]
        if id(second) in first_ancestors:
            return [second, first]
        common = first_ancestors & second_ancestors
        if not common:
            return None
        source = max(common, key=self._position.__getitem__)
        first_length = self._longest_paths(source, first_ancestors)[id(first)]
        second_length = self._longest_paths(source, second_ancestors)[id(second)]
        if first_length == second_length:
            return None
        if first_length < second_length:
            return [first, second]
        return [second, first]


class _Rewriter:
    """Copies a functional or Sequential model, nested models included,
    through `clone_model`; subclasses change layer calls in `call_layer`."""

    def __init__(self, model: keras.Model):
        self._copies: dict[int, Any] = {}  # id(original layer) -> its copy
        self._originals: dict[int, Any] = {}  # id(copy) -> original layer
        self._weight_pairs: list[tuple[Any, Any]] = []
        self._lengths: dict[int, int] = {}  # id(rewritten model) -> depth
        # Inserted layers get names no layer of any level has: Keras refuses
        # a model with two operations of one name.
        self._names = {layer.name for layer in _all_layers(model)}

    def rewrite(self, model: keras.Model) -> keras.Model:
        new_model = self._rewrite(model)
        for original, copy in self._weight_pairs:
            copy.set_weights(original.get_weights())
        return new_model

    def call_layer(
        self, layer: Any, original: Any, args: tuple, kwargs: dict, flow: _Dataflow
    ) -> Any:
        """Call `layer` (the copy of `original`) on `args` in the new graph."""
        return layer(*args, **kwargs)

    def copy_of(self, layer: Any) -> Any:
        """The copy of an original layer."""
        return self._copies[id(layer)]

    def fresh_name(self, base: str) -> str:
        name, count = base, 1
        while name in self._names:
            name, count = f"{base}_{count}", count + 1
        self._names.add(name)
        return name

    def _rewrite(self, model: keras.Model) -> keras.Model:
        flow = _Dataflow()

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
            copy = _copy_from_config(
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


def _copy_from_config(layer: keras.layers.Layer, kind: str, why: str) -> Any:
    """`layer` (a `kind`: "layer" or "model") rebuilt from its config; a
    ValueError saying `why` the copy was needed where it cannot be."""
    try:
        return layer.__class__.from_config(layer.get_config())
    except Exception as error:
        raise ValueError(
            f"Could not copy {kind} '{layer.name}' of type "
            f"{type(layer).__name__} from its config{why} ({error})"
        ) from error


def _all_layers(model: keras.Model) -> list[Any]:
    """Every layer of `model` and of the models nested in it, inputs aside."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(_all_layers(layer))
    return layers


def _as_functional(model: keras.Model) -> keras.Model:
    if isinstance(model, keras.Sequential):
        # A built Sequential model holds a functional graph of its layers;
        # `clone_model` accepts a `call_function` for functional models only.
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


def _check_model(model: Any, function: str) -> None:
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


def _two_addends(layer: Any, args: tuple, kwargs: dict) -> list[Any] | None:
    """The two inputs of an `Add` layer called on a list of two tensors, or
    of an add operation (`x + y`, `keras.ops.add(x, y)`) on two tensors."""
    if any(value is not None for value in kwargs.values()):
        return None
    if isinstance(layer, AddOperation) and not isinstance(layer, keras.layers.Layer):
        inputs = args
    elif isinstance(layer, keras.layers.Add) and len(args) == 1:
        inputs = args[0]
    else:
        return None
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        return None
    if not all(isinstance(t, keras.KerasTensor) for t in inputs):
        return None
    return list(inputs)


def _dtype_next_to(layer: Any, flow: _Dataflow | None = None, tensor: Any = None):
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


def _merge_dtype(original: Any, flow: _Dataflow, addends: Sequence[Any]):
    """The dtype policy of a merge that replaces the addition `original`:
    the addition's own. An `Add` layer casts its inputs to its compute
    dtype; an add operation computes in its inputs' promoted dtype (float32
    when either is float32, as for a float32 model input plus a float16
    branch under `mixed_float16`), which the neighbouring layer's policy
    may not compute in."""
    if isinstance(original, keras.layers.Layer):
        return _dtype_next_to(original)
    dtype = keras.backend.result_type(*(t.dtype for t in addends))
    policy = _dtype_next_to(original, flow, addends[1])
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


def _data_format_next_to(
    followed: Sequence[Any], flow: _Dataflow, tensors: Sequence[Any]
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


def _offset_seed(seed: int | None, offset: int) -> int | None:
    """The seed of the inserted layer number `offset`: `seed + offset`,
    wrapped into the range every backend accepts."""
    if seed is None:
        return None
    return (seed + offset) % (_validation.MAX_SEED + 1)


def _is_sample_drop(layer: Any) -> bool:
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


class _StochasticDepthRewriter(_Rewriter):
    def __init__(self, model, *, mode: str, rescale_at: str, seed: int | None):
        super().__init__(model)
        self.mode = mode
        self.rescale_at = rescale_at
        self.seed = seed
        self.inserted: list[StochasticDepth] = []
        # Per inserted layer: the original drop it stands for, or None.
        self.replaces: list[Any] = []

    def call_layer(self, layer, original, args, kwargs, flow):
        if isinstance(original, StochasticDepth):
            # Already a Stochastic Depth merge: a new one takes its place.
            pair, replaced = _stochastic_depth_inputs(args, kwargs), original
            name = original.name
        else:
            addends = _two_addends(layer, args, kwargs)
            pair = None if addends is None else flow.shortcut_and_residual(*addends)
            replaced, name = None, None
        if pair is None:
            return layer(*args, **kwargs)
        shortcut, residual = pair
        dtype = _merge_dtype(original, flow, pair)
        producer = flow.producer(residual)
        if replaced is None and producer is not None and _is_sample_drop(producer[0]):
            # The branch ends in a drop of its own: merge what it drops.
            replaced, residual = producer
        if isinstance(replaced, StochasticDepth):
            residual = self._keep_inference_scale(replaced, residual)
        if name is None:
            name = self.fresh_name(
                f"{_merge_name(original, flow, pair[1])}_stochastic_depth"
            )
        # The rate is set once every block is known: it depends on the count.
        block = StochasticDepth(
            0.0,
            mode=self.mode,
            rescale_at=self.rescale_at,
            seed=_offset_seed(self.seed, len(self.inserted)),
            name=name,
            dtype=dtype,
        )
        self.inserted.append(block)
        self.replaces.append(replaced)
        return block([shortcut, residual])

    def _keep_inference_scale(self, replaced: StochasticDepth, residual: Any) -> Any:
        """`residual` as the merge `replaced` adds it at inference.

        A merge with `rescale_at="inference"` adds `(1 - rate) * residual`
        at inference, which the inference output of the new merge (a
        plain sum with `rescale_at="training"`) would lose. That scale
        becomes a fixed multiply of the branch, computed as `replaced`
        computes it (`1 - rate` in float32, at the rate it applies now,
        cast to its compute dtype), so the inference output is unchanged bit
        for bit. The offset -0.0 adds nothing, the sign of a zero included.
        """
        if replaced.rescale_at != "inference":
            return residual
        scale = float(keras.ops.convert_to_numpy(1.0 - replaced._current_strength()))
        if scale == 1.0:
            return residual
        rescaling = keras.layers.Rescaling(
            scale,
            offset=-0.0,
            name=self.fresh_name(f"{replaced.name}_inference_scale"),
            dtype=_dtype_next_to(replaced),
        )
        return rescaling(residual)


def _stochastic_depth_inputs(args: tuple, kwargs: dict) -> list[Any] | None:
    if len(args) != 1 or not isinstance(args[0], (list, tuple)) or len(args[0]) != 2:
        return None
    if any(value is not None for key, value in kwargs.items() if key != "training"):
        return None
    return list(args[0])


def _merge_name(original: Any, flow: _Dataflow, residual: Any) -> str:
    """The name an inserted merge is called after: the `Add` layer's, or for
    an add operation (auto-named `add_N`), the layer that ends the branch."""
    if isinstance(original, keras.layers.Layer):
        return original.name
    producer = flow.producer(residual)
    if producer is not None and isinstance(producer[0], keras.layers.Layer):
        return producer[0].name
    return original.name


_DROPBLOCKS = (DropBlock1D, DropBlock2D, DropBlock3D)


class _DropBlockRewriter(_Rewriter):
    """Inserts `DropBlock2D` after the selected layers. A DropBlock already
    where one goes (from an earlier `add_dropblock`: a notebook cell run
    twice) is replaced, never stacked: two layers with one seed draw one
    mask, and the kept units would be scaled twice."""

    def __init__(
        self,
        model,
        *,
        select: Callable[[Any], bool],
        seed: int | None,
        **dropblock_kwargs,
    ):
        super().__init__(model)
        self.select = select
        self.seed = seed
        self.dropblock_kwargs = dropblock_kwargs
        self.inserted: list[DropBlock2D] = []
        # Per inserted layer: the original DropBlocks it replaces.
        self.replaces: list[list[Any]] = []
        # id(tensor of the new graph) -> index of the inserted DropBlock
        # that computed it.
        self._dropped: dict[int, int] = {}
        self._after, self._alone = _dropblock_neighbours(model)

    def call_layer(self, layer, original, args, kwargs, flow):
        if isinstance(original, _DROPBLOCKS) and args:
            index = self._dropped.get(id(args[0]))
            if index is not None:
                # Right after an inserted DropBlock: one it replaces.
                self.replaces[index].append(original)
                return args[0]
        if not isinstance(original, keras.layers.Layer) or not self.select(original):
            return layer(*args, **kwargs)
        if isinstance(original, _DROPBLOCKS):
            # A selected DropBlock: a new one takes its place.
            return self._drop(
                original, args[0], "output", original.name, [original], flow, args
            )
        addends = _two_addends(layer, args, kwargs)
        pair = None if addends is None else flow.shortcut_and_residual(*addends)
        if pair is not None:
            shortcut = source = pair[0]
            replaced, producer = [], flow.producer(shortcut)
            while producer is not None and isinstance(producer[0], _DROPBLOCKS):
                replaced.append(producer[0])
                source = producer[1]
                producer = flow.producer(source)
            # The replaced drops' name, where none of them stays in the model.
            if replaced and all(id(d) in self._alone for d in replaced):
                name = replaced[0].name
            else:
                name = self.fresh_name(f"{original.name}_shortcut_dropblock")
            dropped = self._drop(
                original, source, "shortcut input", name, replaced, flow, [source]
            )
            return layer([dropped if t is shortcut else t for t in addends])
        outputs = layer(*args, **kwargs)
        # An original DropBlock on this output is replaced when it is
        # called (on the new one's output); the new one takes its name.
        old = self._after.get(id(_first_output(original)))
        if old is not None:
            name = old.name
        else:
            name = self.fresh_name(f"{original.name}_dropblock")
        return self._drop(original, outputs, "output", name, [], flow, args)

    def _drop(self, original, tensor, what, name, replaced, flow, sources):
        """`tensor` (`original`'s `what`) through a new DropBlock2D called
        `name`, which replaces the original DropBlocks `replaced`. Its data
        format is that of `original` for its output, else of the nearest
        layer upstream of `sources` that declares one."""
        if not isinstance(tensor, keras.KerasTensor) or len(tensor.shape) != 4:
            shape = tensor.shape if isinstance(tensor, keras.KerasTensor) else tensor
            raise ValueError(
                "`add_dropblock` inserts `DropBlock2D`, which needs a rank 4 "
                f"feature map, but `where` selected layer '{original.name}', "
                f"whose {what} is: {shape}"
            )
        layer = DropBlock2D(
            seed=_offset_seed(self.seed, len(self.inserted)),
            name=name,
            data_format=_data_format_next_to(
                [original] if what == "output" else [],
                flow,
                keras.tree.flatten(sources),
            ),
            dtype=_dtype_next_to(original),
            **self.dropblock_kwargs,
        )
        self.inserted.append(layer)
        self.replaces.append(list(replaced))
        outputs = layer(tensor)
        self._dropped[id(outputs)] = len(self.inserted) - 1
        return outputs


def _first_output(layer: Any) -> Any:
    """The output of `layer`'s first call, or None for a nested model
    (whose `output` is its own graph's, not the call's)."""
    if isinstance(layer, keras.Model):
        return None
    return layer.output


def _graphs(model: keras.Model) -> list[Any]:
    """The functional graphs of `model` and of the models nested in it."""
    graph = functional_graph(model)
    if graph is None:
        return []
    found = [graph]
    for operation, _ in graph_calls(graph):
        if isinstance(operation, keras.Model):
            found.extend(_graphs(operation))
    return found


def _dropblock_neighbours(model: keras.Model) -> tuple[dict[int, Any], set[int]]:
    """For the DropBlock layers called once in `model` (nested models
    included): `{id(input tensor): layer}`, and the ids of those whose
    output feeds one call and is no model output, which leave the model
    when bypassed."""
    calls: collections.Counter = collections.Counter()
    uses: collections.Counter = collections.Counter()
    dropblocks = []
    for graph in _graphs(model):
        for operation, tensors in graph_call_inputs(graph):
            calls[id(operation)] += 1
            uses.update(id(t) for t in tensors)
            if isinstance(operation, _DROPBLOCKS):
                dropblocks.append(operation)
        uses.update(id(t) for t in keras.tree.flatten(graph.outputs))
    once = [d for d in dropblocks if calls[id(d)] == 1]
    after = {id(d.input): d for d in once}
    alone = {id(d) for d in once if uses[id(d.output)] == 1}
    return after, alone


def add_stochastic_depth(
    model: keras.Model,
    final_rate: float,
    *,
    mode: str = "batch",
    rescale_at: str = "training",
    seed: int | None = None,
) -> keras.Model:
    """Returns `model` with Stochastic Depth on every residual block.

    Every two-input addition that merges a residual branch into its
    shortcut, a `keras.layers.Add` layer or an add operation (`x + y`,
    `keras.ops.add(x, y)` in a functional model, as keras.applications
    ConvNeXt writes `inputs + branch`), becomes a `StochasticDepth` layer
    called on `[shortcut, residual]`, which skips the branch with its
    block's rate during training. Rates follow the paper's linear decay
    rule in depth order: block l of L (in topological order of the graph,
    nested models included) gets `stochastic_depth_rates(L, final_rate)[l -
    1]`, so the first blocks are almost always kept and the last is dropped
    with probability `final_rate`.

    Never two drops on one branch: where a residual branch already ends in
    a per-sample drop (a `keras.layers.Dropout` whose `noise_shape` keeps
    only the batch axis, as keras.applications and keras-hub EfficientNet
    build it; a keras_drop `DropPath`; a layer whose class is named
    `...DropPath` or `StochasticDepth`, as keras.applications ConvNeXt's
    and keras-hub's), the `StochasticDepth` merges the branch before that
    drop, which leaves the model: it is replaced, at the decay rule's rate.
    A keras_drop `StochasticDepth` already in the model is replaced by a
    new one under the same name, so a second call re-rates the blocks. One
    with `rescale_at="inference"` scaled its branch by (1 - rate) at
    inference; that scale stays in the model as a fixed multiply of the
    branch (a `keras.layers.Rescaling` named `<merge>_inference_scale`,
    computed as the replaced layer computed it), so the inference output
    is unchanged bit for bit.

    The shortcut is told from the residual by the structure of the graph:
    it is the input that is an ancestor of the other (an identity
    shortcut), or else the one with the shorter path from their nearest
    common ancestor (a projection shortcut). Argument order and layer names
    play no part. An addition is left as it is when it has more than two
    inputs, when its inputs have different shapes (a broadcast, such as
    `x + 3.0`) or no common ancestor, or when both paths have the same
    length. Any other two-input addition whose inputs share an ancestor is
    read as a residual merge, the top-down additions of a feature pyramid
    included: rewrite the backbone, not the detector.

    Transformer blocks add their residuals inside their `call`, which no
    graph rewrite sees. A model whose layers hold a drop-path sublayer (an
    attribute `drop_path`: a layer, or the identity function some blocks
    keep there at rate 0; keras-hub's DINOv2, DINOv3, Swin Transformer,
    MiT and MobileNetV5 blocks) comes back as a copy of the same class,
    built from its config with its weights, in which every such sublayer is
    a seeded keras_drop `DropPath` at the decay rule's rate of its block
    (in the order the model tracks its blocks). `DropPath` always drops per
    sample (`mode` does not apply) and rescales in training (only
    `rescale_at="training"` is accepted). A `.keras` file of that copy
    holds the backbone's config, which builds the backbone's own drop
    paths: reloaded, it is the keras-hub backbone with the saved weights,
    and `add_stochastic_depth` has to be applied again to train on. A model
    with neither additions in its graph nor a drop-path sublayer (keras-hub
    `ViTBackbone`) raises a `ValueError` that says so.

    What was done is logged at level INFO on the `keras_drop.recipes`
    logger (`logging.getLogger("keras_drop.recipes").setLevel("INFO")` to
    see it): the record's attributes `inserted` (names of the drops added
    where there was none) and `replaced` (a dict from each replaced drop to
    what replaced it).

    With the default `rescale_at="training"` (timm, torchvision), kept
    branches are scaled by 1 / (1 - rate) during training and the model adds
    plainly at inference, so the returned model's inference output is the
    original's, bit for bit: fine-tuning a pretrained model starts from its
    accuracy. `rescale_at="inference"` (the paper) scales the branch by
    (1 - rate) at inference instead, which changes a trained model's output.
    Each merge computes in the dtype of the addition it replaces: an `Add`
    layer's dtype policy, or for an add operation its inputs' promoted
    dtype (float32 for a float32 model input plus a float16 branch under
    `mixed_float16`), so output dtypes are unchanged under mixed precision
    too.

    The returned model holds copies of the original layers with the
    original weights (the original model is left untouched); nested
    functional and Sequential models are rewritten too and come back as
    functional models, and a subclass of the functional `keras.Model` (a
    keras-hub CNN backbone, say) comes back as a plain functional model, as
    from `keras.models.clone_model`: its config would rebuild it without
    the inserted layers.

    Args:
        model: a functional or built Sequential `keras.Model`.
        final_rate: float in [0, 1), the drop rate of the last block.
        mode: `"batch"` (default, the paper: one draw per batch) or `"row"`
            (one draw per sample, timm's drop path), see `StochasticDepth`.
            `"subset"` raises `ValueError`: the rewrite keeps the branch's
            layers in the graph, so they would still run on every sample;
            build the model with `StochasticDepthBlock(mode="subset")`.
        rescale_at: `"training"` (default) or `"inference"`, see above.
        seed: int in [0, 2**31 - 1] or `None`. With an int, block l (counted
            from 0 in depth order) gets seed `seed + l` (modulo 2**31), so
            that blocks draw independent masks and the same call gives the
            same masks.

    Returns:
        A new `keras.Model`, compiled as `model` was if it was: a
        functional model, or a copy of `model`'s class for a model whose
        blocks hold drop paths.

    Raises:
        ValueError: for a bad argument, a subclassed or unbuilt model, or a
            model with no residual merge and no drop-path sublayer.

    Example:

    >>> base = keras.applications.ConvNeXtTiny(weights="imagenet")
    >>> model = keras_drop.add_stochastic_depth(base, 0.1, mode="row", seed=0)
    >>> len([l for l in model.layers if isinstance(l, keras_drop.StochasticDepth)])
    18

    Reference:
        - [Huang et al., 2016](https://arxiv.org/abs/1603.09382)
    """
    final_rate = _validation.validate_rate(final_rate, "final_rate")
    if mode == "subset":
        raise ValueError(
            "`add_stochastic_depth` cannot use mode='subset': it rewrites the "
            "`Add` that merges a residual branch, and the branch's layers stay "
            "where they are in the graph, so they run on every sample. Running "
            "a branch on a subset of the batch needs the branch as one layer: "
            "wrap it in `keras_drop.StochasticDepthBlock(branch, rate, "
            "mode='subset')` where the model is built."
        )
    mode = _validation.validate_choice(mode, ("batch", "row"), "mode")
    rescale_at = _validation.validate_choice(
        rescale_at, ("training", "inference"), "rescale_at"
    )
    seed = _validation.validate_seed(seed)
    _check_model(model, "add_stochastic_depth")
    if _drop_path_hooks(model):
        return _replace_drop_paths(model, final_rate, rescale_at, seed)
    _check_has_additions(model)
    rewriter = _StochasticDepthRewriter(
        model, mode=mode, rescale_at=rescale_at, seed=seed
    )
    new_model = rewriter.rewrite(model)
    blocks = rewriter.inserted
    if not blocks:
        raise ValueError(
            "`add_stochastic_depth` found no residual `Add` layer or add "
            f"operation in model '{model.name}': no two-input "
            "`keras.layers.Add` or `x + y` whose shortcut could be told from "
            "its residual branch (see the docstring)."
        )
    for block, rate in zip(
        blocks, stochastic_depth_rates(len(blocks), final_rate), strict=True
    ):
        block.rate = rate
    # A replaced drop whose output feeds another layer too stays there.
    kept = {id(layer) for layer in _all_layers(new_model)}
    replaced = {
        original.name: block.name
        for block, original in zip(blocks, rewriter.replaces, strict=True)
        if original is not None and id(rewriter.copy_of(original)) not in kept
    }
    inserted = [b.name for b in blocks if b.name not in replaced.values()]
    _log_changes(
        "add_stochastic_depth",
        model,
        inserted,
        replaced,
        blocks=f"{len(inserted) + len(replaced)} residual blocks, ",
    )
    return new_model


def _log_changes(
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


def _graph_operations(model: keras.Model) -> list[Any]:
    """The operations called in `model`'s graph and its nested models'."""
    graph = functional_graph(model)
    if graph is None:
        return []
    found = []
    for operation, _ in graph_calls(graph):
        found.append(operation)
        if isinstance(operation, keras.Model):
            found.extend(_graph_operations(operation))
    return found


def _check_has_additions(model: keras.Model) -> None:
    """Refuses, with what to do instead, a model whose graph holds no
    addition at all: its residual blocks (if any) add inside layers."""
    operations = _graph_operations(model)
    additions = (keras.layers.Add, AddOperation, StochasticDepth)
    if any(isinstance(op, additions) for op in operations):
        return
    opaque = sorted(
        {
            op.name
            for op in operations
            if isinstance(op, keras.layers.Layer)
            and not isinstance(op, keras.Model)
            and sublayers(op)
        }
    )
    inside = (
        f" Layers that hold layers of their own, where residual blocks "
        f"could hide: {opaque}."
        if opaque
        else ""
    )
    raise ValueError(
        "`add_stochastic_depth` found no residual `Add` layer or add "
        f"operation in model '{model.name}', and no block holding a "
        "drop-path sublayer (an attribute `drop_path`) to replace: its graph "
        "has no addition at all, and the additions inside a layer's `call` "
        f"are Python code that a graph rewrite cannot see into.{inside} "
        "Instead, build the blocks with `keras_drop.StochasticDepth` or "
        "`keras_drop.DropPath` in their `call`, or use a model whose blocks "
        "hold a drop path (keras-hub's DINOv2, DINOv3, Swin, MiT, "
        "MobileNetV5 backbones)."
    )


def _drop_path_hooks(model: keras.Model) -> list[tuple[Any, Any]]:
    """`(block, its drop path)` for every layer inside `model` that holds a
    drop path as the attribute `drop_path`: a layer, or the plain function
    some keras-hub blocks hold there at rate 0. In the order the model
    tracks its layers, which is depth order for a stack of blocks."""
    hooks = []
    for layer in sublayers_in_order(model):
        drop_path = held_attribute(layer, "drop_path")
        if isinstance(drop_path, keras.layers.Layer) or isinstance(
            drop_path, types.FunctionType
        ):
            hooks.append((layer, drop_path))
    return hooks


def _replace_drop_paths(
    model: keras.Model, final_rate: float, rescale_at: str, seed: int | None
) -> keras.Model:
    """A copy of `model` whose blocks' drop paths are keras_drop `DropPath`
    layers at the linear decay rule's rates."""
    if rescale_at != "training":
        raise _validation.invalid_value(
            "rescale_at",
            f"'training' for model '{model.name}', whose blocks add a drop "
            "path to their shortcut inside their `call`: a `DropPath` "
            "rescales kept samples in training and is the identity at "
            "inference",
            rescale_at,
        )
    copy = _copy_from_config(
        model, "model", ", which replacing its blocks' drop paths needs."
    )
    copy.set_weights(model.get_weights())
    if not model.trainable:
        copy.trainable = False
    hooks = _drop_path_hooks(copy)
    rates = stochastic_depth_rates(len(hooks), final_rate)
    inserted, replaced = [], {}
    for index, ((block, old), rate) in enumerate(zip(hooks, rates, strict=True)):
        drop_path = DropPath(
            rate,
            seed=_offset_seed(seed, index),
            name=f"{block.name}_drop_path",
            dtype=_dtype_next_to(block),
        )
        if isinstance(old, keras.layers.Layer) and old.built:
            drop_path.build_from_config(old.get_build_config())
        replace_sublayer(block, "drop_path", drop_path)
        # Block names repeat across stages (Swin): named by their path.
        where = f"{block.path}/drop_path"
        if _is_sample_drop(old):
            replaced[where] = drop_path.name
        else:
            inserted.append(where)
    _log_changes(
        "add_stochastic_depth",
        model,
        inserted,
        replaced,
        blocks=f"{len(inserted) + len(replaced)} residual blocks, ",
    )
    if model.compiled:
        copy.compile_from_config(model.get_compile_config())
    return copy


_RESNET_GROUPS_3_4 = re.compile(r"conv[45]_block\d+_(1_relu|2_relu|3_bn|add)")


def resnet50_groups_3_4(layer: keras.layers.Layer) -> bool:
    """The DropBlock paper's ResNet-50 placement, as a `where` predicate.

    The paper's best ResNet-50 result applies DropBlock in groups 3 and 4
    (Keras' `conv4_*` and `conv5_*` stages) after every convolution's batch
    norm (and ReLU) of each bottleneck branch and on each skip connection,
    as the reference TPU implementation does. In `keras.applications`
    naming, this selects `conv4_blockN_1_relu`, `_2_relu`, `_3_bn` and
    `_add`; for a selected residual `Add`, `add_dropblock` drops the
    shortcut input, the skip connection. That is four DropBlock layers per
    block, 36 in ResNet-50. The names are the same in `ResNet101` and
    `ResNet152`, so the predicate serves them too.

    Args:
        layer: a layer of the model.

    Returns:
        Whether DropBlock goes after `layer` (or on its skip connection).

    Example:

    >>> base = keras.applications.ResNet50(weights="imagenet")
    >>> model = keras_drop.add_dropblock(
    ...     base, 0.1, 7, where=keras_drop.recipes.resnet50_groups_3_4, seed=0
    ... )

    Reference:
        - [Ghiasi et al., 2018](https://arxiv.org/abs/1810.12890), sec. 4.1.
    """
    return _RESNET_GROUPS_3_4.fullmatch(layer.name) is not None


def _selector(where: Any, model: keras.Model) -> Callable[[Any], bool]:
    expected = (
        "a callable `where(layer) -> bool` or a list of layer names, such as "
        "`keras_drop.recipes.resnet50_groups_3_4` or `['conv4_block1_out']`"
    )
    if callable(where):
        return where
    if (
        isinstance(where, Sequence)
        and not isinstance(where, str)
        and all(isinstance(name, str) for name in where)
    ):
        names = set(where)
        unknown = sorted(names - {layer.name for layer in _all_layers(model)})
        if unknown:
            raise _validation.invalid_value(
                "where",
                f"names of layers of model '{model.name}' (input layers "
                f"excluded); these name no layer: {unknown}",
                where,
            )
        return lambda layer: layer.name in names
    raise _validation.invalid_value("where", expected, where)


def add_dropblock(
    model: keras.Model,
    rate: float,
    block_size: int | tuple[int, int],
    *,
    where: Callable[[keras.layers.Layer], bool] | Sequence[str],
    shared_channels: bool = False,
    seed: int | None = None,
) -> keras.Model:
    """Returns `model` with `DropBlock2D` after the layers `where` selects.

    `where` is a predicate called on every layer of the model (nested
    functional and Sequential models included, their layers too), or a list
    of layer names. A `DropBlock2D(rate, block_size)` is inserted on the
    output of each selected layer, which must be a rank 4 feature map. It
    takes the data format of the layer it follows: that layer's
    `data_format`, or for a `BatchNormalization` its axis (1 is channels
    first); else, for a layer that has neither (`ReLU`, `Add`), that of
    the nearest layer upstream that has one; else
    `keras.config.image_data_format()`. A selected `Add` that merges a
    residual branch into its shortcut gets the DropBlock on its shortcut
    input instead, the skip connection, where the paper puts it (the
    shortcut is told from the residual by the structure of the graph, as in
    `add_stochastic_depth`); select the layer after the `Add` to drop the
    block's output. An addition written `x + y` (keras.applications
    ConvNeXt's residuals) is an operation, not a layer, and is not offered
    to `where`: select the layers of the branch or after the merge.

    Never two DropBlocks in one place: a DropBlock layer (1D, 2D or 3D)
    right after a selected layer, or ending a selected `Add`'s shortcut,
    is replaced by the new one under its name, so `add_dropblock` applied
    again with the same `where` (a notebook cell run twice) gives the model
    it gave once. What was inserted and replaced is logged at level INFO on
    the `keras_drop.recipes` logger, as `add_stochastic_depth` logs it.

    `keras_drop.recipes.resnet50_groups_3_4` is the paper's ResNet-50
    placement (groups 3 and 4, after convolutions and on skip connections)
    for `keras.applications.ResNet50`. The paper uses `block_size=7` at
    224 x 224 and a keep probability ramped from 1 to 0.9 during training
    (`rate` 0.1).

    DropBlock is the identity at inference, so the returned model's
    inference output is the original's, bit for bit. It holds copies of the
    original layers with the original weights (the original model is left
    untouched), as `add_stochastic_depth` does.

    Args:
        model: a functional or built Sequential `keras.Model`.
        rate: float in [0, 1), the fraction of units each layer drops.
        block_size: int or a tuple of 2 ints, the side of a dropped block;
            a block larger than a feature map is clipped to it.
        where: a callable `where(layer) -> bool`, called with the original
            model's layers, or a list of layer names.
        shared_channels: if `True`, one mask per sample shared by all
            channels; see `DropBlock2D`.
        seed: int in [0, 2**31 - 1] or `None`. With an int, the inserted
            layers get seeds `seed`, `seed + 1`, ... (modulo 2**31) in depth
            order, so that no two draw the same masks.

    Returns:
        A new functional `keras.Model`, compiled as `model` was if it was.

    Raises:
        ValueError: for a bad argument, names in `where` that name no layer,
            a `where` that selects nothing, a selected layer whose output is
            not rank 4, or a subclassed or unbuilt model.

    Example:

    >>> base = keras.applications.ResNet50(weights="imagenet")
    >>> model = keras_drop.add_dropblock(
    ...     base, 0.1, 7, where=keras_drop.recipes.resnet50_groups_3_4, seed=0
    ... )
    >>> len([l for l in model.layers if isinstance(l, keras_drop.DropBlock2D)])
    36

    Reference:
        - [Ghiasi et al., 2018](https://arxiv.org/abs/1810.12890), sec. 4.1.
    """
    rate = _validation.validate_rate(rate)
    block_size = _validation.validate_int_tuple(block_size, 2, "block_size")
    shared_channels = _validation.validate_bool(shared_channels, "shared_channels")
    seed = _validation.validate_seed(seed)
    _check_model(model, "add_dropblock")
    select = _selector(where, model)
    rewriter = _DropBlockRewriter(
        model,
        select=select,
        rate=rate,
        block_size=block_size,
        shared_channels=shared_channels,
        seed=seed,
    )
    new_model = rewriter.rewrite(model)
    if not rewriter.inserted:
        raise _validation.invalid_value(
            "where",
            f"a selection of at least one layer of model '{model.name}' "
            "(input layers cannot be selected); it selected none",
            where,
        )
    # A replaced DropBlock whose output feeds another layer too stays there.
    kept = {id(layer) for layer in _all_layers(new_model)}
    replaced = {
        old.name: layer.name
        for layer, olds in zip(rewriter.inserted, rewriter.replaces, strict=True)
        for old in olds
        if id(rewriter.copy_of(old)) not in kept
    }
    inserted = [d.name for d in rewriter.inserted if d.name not in replaced.values()]
    _log_changes("add_dropblock", model, inserted, replaced)
    return new_model
