"""`prune_layers`: a shallower inference copy of a model trained with
LayerDrop or stochastic depth."""

from __future__ import annotations

import fractions
import math
from collections.abc import Sequence
from typing import Any

import keras

from keras_drop import _validation
from keras_drop.layers import LayerDrop, StochasticDepth, StochasticDepthBlock
from keras_drop.layers._keras_internals import functional_graph, graph_calls
from keras_drop.recipes._rewrite import (
    Rewriter,
    check_model,
    copy_from_config,
    logger,
)

__all__ = ["prune_layers"]

_PRUNABLE = (LayerDrop, StochasticDepth, StochasticDepthBlock)


def prune_layers(model: keras.Model, keep: float | Sequence[str]) -> keras.Model:
    """Returns a copy of `model` without the depth it learned to do without.

    The prunable layers are, in depth order (the order of the graph, nested
    functional and Sequential models included):

    - `LayerDrop`: pruned, the wrapped layer goes and its input flows on.
    - `StochasticDepth` (a residual merge): pruned, the residual branch
      goes and the shortcut flows on; the branch's layers that then feed
      nothing leave the copy.
    - `StochasticDepthBlock`: pruned, its shortcut stays: `shortcut(x)` if
      it has a projection shortcut, else `x`.

    `keep` says which stay: a list of names of prunable layers, or a
    fraction `f` in (0, 1] of them, spread evenly over depth as fairseq's
    `--encoder-layers-to-keep 0,2,4,6` spreads them: of `n` prunable
    layers, index `i` (from 0) is kept when `ceil((i + 1) * f) >
    ceil(i * f)`. That keeps exactly `ceil(f * n)` layers, the first one
    always: of 8, indices 0, 2, 4, 6 at 0.5 and 0, 4 at 0.25; of 12,
    0, 3, 6, 9 at 1/3. Fan et al. find that a model trained with LayerDrop
    0.5 loses little when cut to every other layer this way; trained with
    less, prune less.

    Kept prunable layers stay as they are, with their rates: the copy can
    be trained further with them; at inference they are the identity
    (`LayerDrop`) or compute their inference output (stochastic depth, its
    rescaling included). The copy holds copies of the kept layers with the
    original weights; the pruned layers' weights are not in it. It saves to
    and reloads from a `.keras` file as any functional model. What was
    pruned is logged at level INFO on the `keras_drop.recipes` logger (the
    record carries `pruned` and `kept`, lists of names).

    Args:
        model: a functional or built Sequential `keras.Model`.
        keep: a list of names of prunable layers to keep, or a float in
            (0, 1], the fraction of them to keep.

    Returns:
        A new functional `keras.Model`, compiled as `model` was if it was.

    Raises:
        ValueError: for a model with no prunable layer, a `keep` that is
            neither a fraction in (0, 1] nor a list of names of prunable
            layers, or a subclassed or unbuilt model.

    Example:

    >>> model = keras_drop.add_layer_drop(
    ...     model, 0.5, where=lambda layer: layer.name.startswith("block_")
    ... )
    >>> model.fit(x_train, y_train)
    >>> half = keras_drop.prune_layers(model, 0.5)  # blocks 0, 2, 4, 6 of 8

    Reference:
        - [Fan et al., 2019](https://arxiv.org/abs/1909.11556) (LayerDrop,
          "pruning at inference time")
    """
    check_model(model, "prune_layers")
    prunable = _prunable_layers(model)
    if not prunable:
        raise ValueError(
            "`prune_layers` found nothing to prune in model "
            f"'{model.name}': it prunes `LayerDrop`, `StochasticDepth` and "
            "`StochasticDepthBlock` layers. Add them with `add_layer_drop` "
            "or `add_stochastic_depth` and train the model with them first."
        )
    names = [layer.name for layer in prunable]
    kept = _kept_names(keep, names, model)
    rewriter = _PruningRewriter(
        model, pruned={id(layer) for layer in prunable if layer.name not in kept}
    )
    new_model = rewriter.rewrite(model)
    pruned = [name for name in names if name not in kept]
    logger.info(
        "prune_layers on model '%s': %d of %d layers pruned %s, kept %s",
        model.name,
        len(pruned),
        len(names),
        pruned,
        [name for name in names if name in kept],
        extra={"pruned": pruned, "kept": [name for name in names if name in kept]},
    )
    if model.compiled:
        new_model.compile_from_config(model.get_compile_config())
    return new_model


def _prunable_layers(model: keras.Model) -> list[Any]:
    """The prunable layers called in `model`'s graph and its nested
    models', in depth order, each once."""
    found, seen = [], set()

    def walk(graph):
        for operation, _ in graph_calls(graph):
            if id(operation) in seen:
                continue
            seen.add(id(operation))
            if isinstance(operation, _PRUNABLE):
                found.append(operation)
            elif isinstance(operation, keras.Model):
                inner = functional_graph(operation)
                if inner is not None:
                    walk(inner)

    walk(functional_graph(model))
    return found


def _kept_names(keep: Any, names: list[str], model: keras.Model) -> set[str]:
    if isinstance(keep, (int, float)) and not isinstance(keep, bool):
        if not 0 < keep <= 1:
            raise _validation.invalid_value(
                "keep", "a fraction in (0, 1] or a list of layer names", keep
            )
        # Exact arithmetic: 10 * 0.7 is 7.000000000000001 in floats.
        fraction = fractions.Fraction(keep)
        return {
            name
            for i, name in enumerate(names)
            if math.ceil((i + 1) * fraction) > math.ceil(i * fraction)
        }
    if (
        isinstance(keep, Sequence)
        and not isinstance(keep, str)
        and all(isinstance(name, str) for name in keep)
    ):
        unknown = sorted(set(keep) - set(names))
        if unknown:
            raise _validation.invalid_value(
                "keep",
                f"names of prunable layers of model '{model.name}', in depth "
                f"order {names}; these name none: {unknown}",
                keep,
            )
        return set(keep)
    raise _validation.invalid_value(
        "keep", "a fraction in (0, 1] or a list of layer names", keep
    )


class _PruningRewriter(Rewriter):
    """Leaves out the calls of the pruned layers: the input (LayerDrop),
    the shortcut (StochasticDepth) or the shortcut's output
    (StochasticDepthBlock) flows on in their place."""

    def __init__(self, model, *, pruned):
        super().__init__(model)
        self.pruned = pruned

    def call_layer(self, layer, original, args, kwargs, flow):
        if id(original) not in self.pruned:
            return layer(*args, **kwargs)
        self.leave_out(original)
        if isinstance(original, StochasticDepth):
            return args[0][0]
        if isinstance(original, StochasticDepthBlock) and original.shortcut:
            shortcut = copy_from_config(
                original.shortcut,
                "layer",
                ", which pruning the block around it needs.",
            )
            self.copy_weights(original.shortcut, shortcut)
            return shortcut(args[0])
        return args[0]
