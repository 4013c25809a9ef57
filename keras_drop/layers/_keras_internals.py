"""The private Keras APIs keras_drop relies on, in one place, and why.

Keras offers no public way to do two things `Cutout` needs, and one that
the model rewrites in `keras_drop.recipes` need:

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

All three are exercised by `tests/test_keras_internals.py`, which fails if a
Keras release moves them.
"""

from __future__ import annotations

from typing import Any

from keras.src.backend.common import global_state
from keras.src.models.functional import Functional

try:
    from keras.src.layers.preprocessing.data_layer import DataLayer
except ImportError:  # Keras 3.8 - 3.10
    from keras.src.layers.preprocessing.tf_data_layer import (
        TFDataLayer as DataLayer,
    )

__all__ = ["DataLayer", "Functional", "called_on_its_own"]


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
