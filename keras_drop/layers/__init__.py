"""keras_drop layers, one module per family."""

from keras_drop.layers.dropblock import DropBlock1D, DropBlock2D, DropBlock3D

__all__ = ["DropBlock1D", "DropBlock2D", "DropBlock3D"]
