"""Structured-dropout regularizers for Keras 3.

DropBlock and its relatives as `keras.layers.Layer`s built on `keras.ops`, so
one implementation runs on the TensorFlow, JAX and PyTorch backends. The
functional forms live in `keras_drop.ops`. `variance_shift` and
`recalibrate_batchnorm` measure and repair what dropout before
BatchNormalization does to its moving statistics.
"""

__version__ = "0.1.0.dev0"
"""The version of keras_drop (PEP 440), the one place it is written: the
build reads it into the distribution's metadata."""

from keras_drop import ops, recipes  # noqa: E402
from keras_drop.batchnorm import recalibrate_batchnorm, variance_shift  # noqa: E402
from keras_drop.callbacks import DropRateScheduler  # noqa: E402
from keras_drop.layers import (  # noqa: E402
    Cutout,
    DropBlock1D,
    DropBlock2D,
    DropBlock3D,
    DropConnectDense,
    DropPath,
    JoinDropPath,
    LayerDrop,
    PatchDropout,
    StochasticDepth,
    StochasticDepthBlock,
    UniformDropout,
    stochastic_depth_rates,
)
from keras_drop.monte_carlo import export_monte_carlo, mc_predict  # noqa: E402
from keras_drop.recipes import (  # noqa: E402
    add_dropblock,
    add_layer_drop,
    add_patch_dropout,
    add_stochastic_depth,
    prune_layers,
)

__all__ = [
    "Cutout",
    "DropBlock1D",
    "DropBlock2D",
    "DropBlock3D",
    "DropConnectDense",
    "DropPath",
    "DropRateScheduler",
    "PatchDropout",
    "JoinDropPath",
    "LayerDrop",
    "StochasticDepth",
    "StochasticDepthBlock",
    "UniformDropout",
    "__version__",
    "add_dropblock",
    "add_layer_drop",
    "add_patch_dropout",
    "add_stochastic_depth",
    "export_monte_carlo",
    "mc_predict",
    "ops",
    "prune_layers",
    "recalibrate_batchnorm",
    "recipes",
    "stochastic_depth_rates",
    "variance_shift",
]
