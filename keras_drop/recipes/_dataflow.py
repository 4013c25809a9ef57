"""The dataflow of a graph being rewritten, and which input of an
addition is its shortcut: read from the structure of the graph, as the
package docstring describes (`Dataflow.shortcut_and_residual`)."""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from typing import Any

import keras

from keras_drop.layers._keras_internals import AddOperation

__all__ = ["Dataflow", "two_addends"]


class Dataflow:
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


def two_addends(layer: Any, args: tuple, kwargs: dict) -> list[Any] | None:
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
