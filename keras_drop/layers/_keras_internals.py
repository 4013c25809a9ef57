"""The private Keras APIs keras_drop relies on, in one place, and why.

Keras offers no public way to do some things keras_drop needs: two for
`Cutout`, one for the model rewrites in `keras_drop.recipes`, and the graph
walks of `recalibrate_batchnorm`, `variance_shift` and `DropRateScheduler`.

1. Run inside a `tf.data` pipeline under the JAX and PyTorch backends. Keras'
   own augmentation layers (`RandomErasing`, `RandomFlip`) subclass the
   private `DataLayer` (named `TFDataLayer` before Keras 3.11): when called
   on symbolic TensorFlow tensors, its `__call__` switches `self.backend` to
   TensorFlow, so the layer's maths runs on TensorFlow ops with a TensorFlow
   seed generator (`_get_seed_generator`), and switches back afterwards.
2. Know whether it is being used on its own (`Cutout(...)(images)`, or
   `dataset.map(Cutout(...))`) or inside a model called with `training`
   unset (as `model.export` traces it). Keras' call context records the
   entry layer of the current call, and a layer placed in a functional or
   Sequential model holds inbound nodes; `called_on_its_own` reads both.
   Both are needed: JAX's train, predict and export steps run the model's
   `call` (through `stateless_call`) without opening a call context, so the
   first layer of the model becomes the entry layer.
3. Tell a functional model from a subclassed one. Both are `keras.Model`
   instances; only the first has a graph that `clone_model` can rewrite,
   and `clone_model` itself tells them apart with `isinstance(model,
   Functional)` (a `keras.Model` subclass whose `__init__` calls the
   functional constructor becomes a `Functional` too).

4. Walk the graph of a functional or Sequential model to find where each
   `BatchNormalization` is called and on which symbolic tensor, nested
   models included. `Model.layers` lists a graph's layers but not the
   tensors they are called on, and `layer.input` is ambiguous for a layer
   called more than once (a nested model's `input` is even the tensor of
   its first call in the enclosing graph, not its own input). A `Functional`
   keeps its nodes by depth (`_nodes_by_depth`), which is what its own
   `call` walks; a built `Sequential` runs an inner `Functional`
   (`_functional`). `graph_call_inputs` reads every tensor a node is
   called on (`Node.input_tensors`), for counting the uses of a tensor.

5. List every layer of a model, however deeply nested (functional and
   Sequential submodels, layers held by subclassed models and layers):
   `Model.layers` lists only the top level. `Layer._flatten_layers` is the
   walk Keras itself uses for `Model.variables` (`sublayers`), used by
   `DropRateScheduler` and to report a BatchNormalization hidden inside a
   subclassed layer.

6. Recognize an addition written `x + y` or `keras.ops.add(x, y)` in a
   functional graph. It is recorded as a node of the operation class
   `keras.src.ops.numpy.Add` (`AddOperation` here), which no public name
   exports; `add_stochastic_depth` treats it as it treats an `Add` layer.

7. Put a new sublayer in place of another in a built layer
   (`replace_sublayer`), which `add_stochastic_depth` does to the
   drop-path sublayer of a transformer block. A built layer locks its
   tracker ("You cannot add new elements of state ... to a layer that is
   already built"), and plain assignment would leave the old sublayer
   tracked as well; Keras' tracker has `replace_tracked_value`, which puts
   the new one at the old one's place, so the order of variables, and with
   it every weight, stays where it was.

8. Describe a model's inputs for an export: `model.export` builds the
   input signature of a functional, Sequential or built subclassed model
   with `keras.src.export.export_utils.get_input_signature`, which
   `export_monte_carlo` reuses for its own serving function.

9. Read the inputs `model.predict` reads (arrays and structures of them,
   `tf.data.Dataset`, Python generators, `keras.utils.PyDataset`, torch
   `DataLoader`), batch by batch, for `mc_predict`: Keras' own
   `get_data_adapter` tells them apart and iterates them for `predict`,
   and no public name exports it.

10. Pass a wrapped layer's call arguments through a wrapper
    (`LayerDrop`). `Layer.__call__` binds the arguments to the wrapper's
    own `call` signature (the private `_call_signature`) and refuses a
    `**kwargs` that mixes tensors and other values (`padding_mask=mask,
    use_causal_mask=True`), so the wrapper binds them to the wrapped
    layer's signature instead (`call_like`): each argument is then checked
    on its own, as the wrapped layer's own `__call__` checks it.

All are exercised by `tests/test_keras_internals.py`, which fails if a
Keras release moves them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
from keras.src.backend.common import global_state
from keras.src.export.export_utils import get_input_signature
from keras.src.models.functional import Functional
from keras.src.ops.numpy import Add as AddOperation
from keras.src.trainers.data_adapters import get_data_adapter

try:
    from keras.src.layers.preprocessing.data_layer import DataLayer
except ImportError:  # Keras 3.8 - 3.10
    from keras.src.layers.preprocessing.tf_data_layer import (
        TFDataLayer as DataLayer,
    )

__all__ = [
    "AddOperation",
    "DataLayer",
    "Functional",
    "call_like",
    "called_on_its_own",
    "functional_graph",
    "graph_call_inputs",
    "graph_calls",
    "held_attribute",
    "input_signature",
    "predict_batches",
    "replace_list_entry",
    "replace_sublayer",
    "sublayers",
    "sublayers_in_order",
]


def called_on_its_own(layer: Any) -> bool:
    """Whether `layer` is being used outside any model.

    True when `layer` is the outermost layer of the call in progress (Keras'
    call context names the layer whose `__call__` opened it) and is not a
    node of a functional or Sequential model.
    """
    context = global_state.get_global_attribute("current_call_ctx")
    if context is not None and context.entry_layer is not layer:
        return False
    return not layer._inbound_nodes


def functional_graph(model: Any) -> Functional | None:
    """The `Functional` graph that runs `model`, or None if it has none.

    A functional model is its own graph; a built `Sequential` runs an inner
    `Functional`. A subclassed model, an unbuilt `Sequential` or a Sequential
    whose layers could not be traced symbolically has none.
    """
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return None


def graph_calls(graph: Functional) -> list[tuple[Any, Any]]:
    """`(layer, first positional argument)` for every call in `graph`.

    In execution order: deepest nodes first, as `Functional.call` runs them,
    so every call comes after the calls its input depends on. The argument
    is the symbolic tensor (or structure of tensors) of `graph` the layer is
    called on. Input placeholders are left out.
    """
    calls = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            args = node.arguments.args
            calls.append((node.operation, args[0] if args else None))
    return calls


def graph_call_inputs(graph: Functional) -> list[tuple[Any, list[Any]]]:
    """`(layer, every symbolic tensor it is called on)` for every call in
    `graph`, in the order of `graph_calls`: positional and keyword
    arguments, a list argument's items included."""
    calls = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            calls.append((node.operation, list(node.input_tensors)))
    return calls


def sublayers(layer: Any) -> list[Any]:
    """Every layer tracked inside `layer`, recursively, `layer` excluded."""
    return layer._flatten_layers(include_self=False, recursive=True)


def sublayers_in_order(layer: Any) -> list[Any]:
    """`sublayers`, depth first in the order each layer tracks its own
    (`_flatten_layers` walks a layer's children in reverse order)."""
    found, seen = [], set()

    def walk(parent):
        for child in parent._flatten_layers(include_self=False, recursive=False):
            if id(child) not in seen:
                seen.add(id(child))
                found.append(child)
                walk(child)

    walk(layer)
    return found


def replace_sublayer(parent: Any, attribute: str, layer: Any) -> None:
    """Sets `parent.<attribute>` to `layer` in a built `parent`, untracking
    the layer (or plain function) it held, so `layer`'s state joins
    `parent`'s."""
    tracker = parent._tracker
    old = held_attribute(parent, attribute)
    if old is not None and tracker.is_in_store("layers", old):
        tracker.replace_tracked_value("layers", old, layer)
    else:
        locked = tracker.locked
        tracker.unlock()
        try:
            tracker.add_to_store("layers", layer)
        finally:
            tracker.locked = locked
    modules = parent.__dict__.get("_modules")
    if modules is not None:  # the torch backend: a layer is a torch Module
        parent.__dict__.pop(attribute, None)
        modules[attribute] = layer
    else:
        object.__setattr__(parent, attribute, layer)


def replace_list_entry(parent: Any, values: Any, index: int, layer: Any) -> None:
    """Sets `values[index]` to `layer` in a list that the built `parent`
    tracks, untracking the layer it held, so `layer`'s state joins
    `parent`'s."""
    tracker = parent._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        # The tracked list untracks what `pop` removes and tracks what
        # `insert` adds; an assignment would do neither.
        values.pop(index)
        values.insert(index, layer)
    finally:
        tracker.locked = locked


def held_attribute(layer: Any, attribute: str) -> Any:
    """What `layer` holds as `attribute` (None if nothing), without running
    a property: on the torch backend a layer is a `torch.nn.Module`, which
    keeps its sublayers in `_modules` rather than in the instance dict."""
    if attribute in layer.__dict__:
        return layer.__dict__[attribute]
    return layer.__dict__.get("_modules", {}).get(attribute)


def input_signature(model: Any) -> list[Any]:
    """The positional input specs `model.export` would serve `model` with."""
    return list(get_input_signature(model))


def predict_batches(x: Any, batch_size: int) -> Iterator[Any]:
    """The batches of inputs `model.predict(x, batch_size=batch_size)`
    would run, as NumPy arrays (or structures of them, as the model takes).

    An array, or a structure of arrays, is cut into batches of
    `batch_size` rows; a dataset, generator or `PyDataset` yields its own
    batches, whose targets and sample weights (`(x, y)`, `(x, y, w)`) are
    left out. Anything else raises the `ValueError` of Keras' `predict`.
    """
    adapter = get_data_adapter(x, batch_size=batch_size, shuffle=False)
    for data in adapter.get_numpy_iterator():
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        yield inputs


def call_like(wrapper: Any, layer: Any) -> None:
    """Makes `wrapper.__call__` bind its arguments as `layer`'s does.
    `wrapper.call` must accept them (`inputs, *args, training, **kwargs`);
    `training` reaches it whether `layer` takes one or not (Keras strips
    it from the binding and passes it to a `call` that names it)."""
    wrapper._call_signature = layer._call_signature
