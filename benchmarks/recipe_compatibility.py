"""Prints the compatibility table of the model recipes as markdown.

One row per model family with residual connections: every keras.applications
family (its smallest member) and the keras-hub 0.32 vision backbones (small
random configurations), each built with `weights=None` for 32 x 32 images
(Xception's smallest input, 71 x 71, for Xception). For each row:

- the residual merges the model has: two-input additions of equal shapes
  in its graph (`Add` layers and `x + y` operations; keras.applications'
  MobileNetV3 adds constants, which are not counted), or else the blocks
  holding a drop-path sublayer whose drop paths `add_stochastic_depth`
  replaced (keras-hub transformers, where the additions are inside the
  blocks' `call`, which no public Keras API lists);
- `add_stochastic_depth(model, 0.2, seed=0)`: how many Stochastic Depth
  drops it inserted and how many of the model's own per-sample drops it
  replaced (read from the record it logs), or why it refused;
- `add_dropblock(model, 0.1, 3, where=<every 2D convolution>, seed=0)`:
  how many DropBlock2D layers it inserted (read from the record it logs),
  or why it refused;
- whether both recipes leave the inference output bit-identical, and the
  class the recipes give back.

    KERAS_BACKEND=tensorflow python benchmarks/recipe_compatibility.py

(TensorFlow builds these models fastest on CPU: JAX compiles an initializer
per weight shape.)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_drop  # noqa: E402

APPLICATIONS = [
    ("ResNet", "ResNet50"),
    ("ResNetV2", "ResNet50V2"),
    ("ConvNeXt", "ConvNeXtTiny"),
    ("EfficientNet", "EfficientNetB0"),
    ("EfficientNetV2", "EfficientNetV2B0"),
    ("MobileNetV2", "MobileNetV2"),
    ("MobileNetV3", "MobileNetV3Small"),
    ("ResNetRS", "ResNetRS50"),
    ("RegNetX", "RegNetX002"),
    ("RegNetY", "RegNetY002"),
    ("Xception", "Xception"),
]


def keras_hub_backbones():
    """(row name, builder) for keras-hub's vision backbones, small configs."""
    import keras_hub

    models = keras_hub.models
    dinov3 = dict(
        patch_size=4,
        num_layers=4,
        hidden_dim=32,
        num_heads=2,
        intermediate_dim=64,
        image_shape=(32, 32, 3),
    )
    dinov2 = dict(dinov3, position_embedding_shape=(32, 32, 3))
    return [
        (
            "ResNetBackbone (ResNet-18 layout)",
            lambda: models.ResNetBackbone(
                input_conv_filters=[64],
                input_conv_kernel_sizes=[7],
                stackwise_num_filters=[64, 64, 128, 128],
                stackwise_num_blocks=[2, 2, 2, 2],
                stackwise_num_strides=[1, 2, 2, 2],
                block_type="basic_block",
                image_shape=(32, 32, 3),
            ),
        ),
        (
            "CSPNetBackbone (dark blocks)",
            lambda: models.CSPNetBackbone(
                stem_filters=16,
                stem_kernel_size=3,
                stem_strides=1,
                stackwise_depth=[1, 2, 2],
                stackwise_strides=[1, 2, 2],
                stackwise_num_filters=[16, 32, 64],
                stage_type="dark",
                block_type="dark_block",
                image_shape=(32, 32, 3),
            ),
        ),
        (
            "EfficientNetBackbone (B0 layout, width 0.25)",
            lambda: models.EfficientNetBackbone(
                stackwise_width_coefficients=[0.25] * 7,
                stackwise_depth_coefficients=[1.0] * 7,
                stackwise_kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
                stackwise_num_repeats=[1, 2, 2, 3, 3, 4, 1],
                stackwise_input_filters=[32, 16, 24, 40, 80, 112, 192],
                stackwise_output_filters=[16, 24, 40, 80, 112, 192, 320],
                stackwise_expansion_ratios=[1, 6, 6, 6, 6, 6, 6],
                stackwise_squeeze_and_excite_ratios=[0.25] * 7,
                stackwise_strides=[1, 2, 2, 2, 1, 2, 1],
                stackwise_block_types=["v1"] * 7,
                input_shape=(32, 32, 3),
            ),
        ),
        (
            "MobileNetBackbone (V3 layout)",
            lambda: models.MobileNetBackbone(
                stackwise_expansion=[[40, 56], [64, 144, 144], [72, 72]],
                stackwise_num_blocks=[2, 3, 2],
                stackwise_num_filters=[[16, 16], [24, 24, 24], [24, 24]],
                stackwise_kernel_size=[[3, 3], [5, 5, 5], [5, 5]],
                stackwise_num_strides=[[2, 1], [2, 1, 1], [1, 1]],
                stackwise_se_ratio=[[None, None], [0.25] * 3, [0.3, 0.3]],
                stackwise_activation=[["relu"] * 2, ["hard_swish"] * 3, ["relu"] * 2],
                stackwise_padding=[[1, 1], [2, 2, 2], [2, 2]],
                output_num_filters=64,
                depthwise_filters=16,
                depthwise_stride=1,
                depthwise_residual=False,
                last_layer_filter=64,
                squeeze_and_excite=0.5,
                image_shape=(32, 32, 3),
            ),
        ),
        (
            "XceptionBackbone",
            lambda: models.XceptionBackbone(
                stackwise_conv_filters=[[16, 32], [32, 64], [64, 64]],
                stackwise_pooling=[True, True, False],
                image_shape=(71, 71, 3),
            ),
        ),
        ("DINOV2Backbone", lambda: models.DINOV2Backbone(**dinov2)),
        (
            "DINOV2Backbone (drop_path_rate=0.1)",
            lambda: models.DINOV2Backbone(**dinov2, drop_path_rate=0.1),
        ),
        (
            "DINOV3Backbone",
            lambda: models.DINOV3Backbone(**dinov3),
        ),
        (
            "SwinTransformerBackbone",
            lambda: models.SwinTransformerBackbone(
                image_shape=(32, 32, 3),
                embed_dim=16,
                depths=(2, 2),
                num_heads=(2, 4),
                window_size=4,
                patch_size=2,
            ),
        ),
        (
            "MiTBackbone",
            lambda: models.MiTBackbone(
                layerwise_depths=[1, 2],
                num_layers=2,
                layerwise_num_heads=[1, 2],
                layerwise_sr_ratios=[2, 1],
                max_drop_path_rate=0.1,
                layerwise_patch_sizes=[7, 3],
                layerwise_strides=[4, 2],
                image_shape=(32, 32, 3),
                hidden_dims=[16, 32],
            ),
        ),
        ("MobileNetV5Backbone (drop_path_rate=0.1)", mobilenetv5),
        (
            "ViTBackbone",
            lambda: models.ViTBackbone(
                image_shape=(32, 32, 3),
                patch_size=8,
                num_layers=2,
                num_heads=2,
                hidden_dim=32,
                mlp_dim=64,
            ),
        ),
    ]


def mobilenetv5():
    import keras_hub
    from keras_hub.src.models.mobilenetv5.mobilenetv5_builder import (
        convert_arch_def_to_stackwise,
    )

    # timm's block strings: an edge residual stage, two universal inverted
    # residual stages, one with a multi-query attention block.
    arch = [
        ["er_r1_k3_s2_e4_c16"],
        ["uir_r2_a3_k3_s2_e4_c24"],
        ["uir_r1_a3_k3_s1_e4_c32", "mqa_r1_k3_h2_v1_s1_d16_c32"],
    ]
    return keras_hub.models.MobileNetV5Backbone(
        **convert_arch_def_to_stackwise(arch),
        stem_size=8,
        num_features=32,
        use_msfa=False,
        image_shape=(32, 32, 3),
        drop_path_rate=0.1,
    )


def application(name):
    size = 71 if name == "Xception" else 32
    return lambda: getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classes=10
    )


def residual_merges(model) -> int:
    """Equal-shape two-input additions in the graph, nested models
    included, each operation at its first call."""
    count = 0
    for operation in getattr(model, "operations", model.layers):
        if isinstance(operation, keras.Model):
            count += residual_merges(operation)
        elif is_addition(operation):
            inputs = keras.tree.flatten(operation.input)
            count += len(inputs) == 2 and inputs[0].shape == inputs[1].shape
    return count


def is_addition(operation) -> bool:
    """An `Add` layer, or an add operation (`x + y`, `keras.ops.add`),
    whose class Keras does not export: a graph node named `Add` that is
    not a layer."""
    if isinstance(operation, keras.layers.Add):
        return True
    return type(operation).__name__ == "Add" and not isinstance(
        operation, keras.layers.Layer
    )


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def refused(error: Exception) -> str:
    text = str(error)
    if "selected none" in text:
        return "refused: `where` selects nothing (no 2D convolution in the graph)"
    if "no block holding a drop-path sublayer" in text:
        return "refused: no addition in the graph, no drop-path sublayer"
    if text.startswith("Could not copy layer"):
        layer = text.split("'")[1]
        return f"refused: layer `{layer}` cannot be rebuilt from its config"
    return f"refused: {text[:100]}"


def is_convolution(layer) -> bool:
    return isinstance(
        layer,
        (
            keras.layers.Conv2D,
            keras.layers.DepthwiseConv2D,
            keras.layers.SeparableConv2D,
        ),
    )


def row(name: str, build) -> str:
    try:
        model = build()
    except Exception as error:  # a configuration keras-hub refuses
        return f"| {name} | not built: {str(error)[:80]} | | | | |"
    shape = (2, *model.inputs[0].shape[1:])
    x = np.random.default_rng(0).uniform(0, 1, shape).astype("float32")
    expected = keras.tree.flatten(model(x, training=False))
    handler = Records()
    logger = logging.getLogger("keras_drop.recipes")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    unchanged, returned, drop_paths = [], set(), 0
    try:
        new = keras_drop.add_stochastic_depth(model, 0.2, seed=0)
        record = handler.records[-1]
        sd = f"inserted {len(record.inserted)}, replaced {len(record.replaced)}"
        # Without additions in the graph, these are blocks' drop paths.
        drop_paths = len(record.inserted) + len(record.replaced)
        unchanged.append(new)
        returned.add(type(new).__name__)
    except ValueError as error:
        sd = refused(error)
    try:
        new = keras_drop.add_dropblock(model, 0.1, 3, where=is_convolution, seed=0)
        db = f"inserted {len(handler.records[-1].inserted)}"
        unchanged.append(new)
        returned.add(type(new).__name__)
    except ValueError as error:
        db = refused(error)
    finally:
        logger.removeHandler(handler)
    same = all(
        all(
            np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
            for a, b in zip(
                expected, keras.tree.flatten(new(x, training=False)), strict=True
            )
        )
        for new in unchanged
    )
    same = ("yes" if same else "NO") if unchanged else "-"
    merges = str(residual_merges(model))
    if merges == "0" and drop_paths:
        merges = f"{drop_paths} blocks with a drop path"
    classes = ", ".join(sorted(returned)) or "-"
    return f"| {name} | {merges} | {sd} | {db} | {same} | {classes} |"


def main() -> None:
    print(
        "| model | residual merges | `add_stochastic_depth` | "
        "`add_dropblock` (every conv) | inference unchanged | returns |"
    )
    print("|---|---|---|---|---|---|")
    absent = [name for _, name in APPLICATIONS if not hasattr(keras.applications, name)]
    rows = [
        (f"{family} (`{name}`)", application(name))
        for family, name in APPLICATIONS
        if name not in absent
    ]
    rows += [(f"keras-hub `{name}`", build) for name, build in keras_hub_backbones()]
    only = sys.argv[1:]
    for name, build in rows:
        if only and not any(word in name for word in only):
            continue
        print(row(name, build), flush=True)
        keras.backend.clear_session()
    if absent and not only:
        print(f"\nNot in keras.applications of Keras {keras.__version__}: {absent}")


if __name__ == "__main__":
    main()
