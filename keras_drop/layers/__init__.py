"""keras_drop layers, one module per family."""

from keras_drop.layers.cutout import Cutout
from keras_drop.layers.depth import JoinDropPath, LayerDrop
from keras_drop.layers.drop_connect import DropConnectDense
from keras_drop.layers.drop_path import (
    DropPath,
    StochasticDepth,
    StochasticDepthBlock,
    stochastic_depth_rates,
)
from keras_drop.layers.dropblock import DropBlock1D, DropBlock2D, DropBlock3D
from keras_drop.layers.patch_dropout import PatchDropout
from keras_drop.layers.uniform import UniformDropout

__all__ = [
    "Cutout",
    "DropBlock1D",
    "DropBlock2D",
    "DropBlock3D",
    "DropConnectDense",
    "DropPath",
    "PatchDropout",
    "JoinDropPath",
    "LayerDrop",
    "StochasticDepth",
    "StochasticDepthBlock",
    "UniformDropout",
    "stochastic_depth_rates",
]
