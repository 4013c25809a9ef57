"""The papers' recipes applied to models users already have.

`add_stochastic_depth`, `add_dropblock`, `add_patch_dropout`,
`add_layer_drop` and `prune_layers` rebuild a functional (or
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

from keras_drop.recipes.dropblock import add_dropblock, resnet50_groups_3_4
from keras_drop.recipes.layer_drop import add_layer_drop
from keras_drop.recipes.patch_dropout import add_patch_dropout
from keras_drop.recipes.pruning import prune_layers
from keras_drop.recipes.stochastic_depth import add_stochastic_depth

__all__ = [
    "add_dropblock",
    "add_layer_drop",
    "add_patch_dropout",
    "add_stochastic_depth",
    "prune_layers",
    "resnet50_groups_3_4",
]
