"""Serves exported models as a deployment would: TensorFlow and ONNX Runtime
only, with `keras_drop` made impossible to import.

    python tests/serve_exported.py DIR

For every SavedModel `DIR/saved_model/NAME` and every ONNX file
`DIR/onnx/NAME.onnx`, serves `DIR/inputs.npy` twice and writes the outputs
to `DIR/served.npz`, and what each SavedModel holds to `DIR/served.json`:
the op types of its serving graph (functions included), the StableHLO ops
of the programs a JAX export embeds (`XlaCallModule`), its variables and
whether serving changed any of them.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.modules["keras_drop"] = None  # `import keras_drop` now raises ImportError

import numpy as np  # noqa: E402


def graph_ops(function) -> tuple[list[str], list[bytes]]:
    """Op types of a concrete function's graph and of the functions it
    calls, and the serialized modules of its `XlaCallModule` ops."""
    graph = function.graph.as_graph_def()
    nodes = list(graph.node)
    for library_function in graph.library.function:
        nodes.extend(library_function.node_def)
    modules = [n.attr["module"].s for n in nodes if n.op == "XlaCallModule"]
    return sorted({node.op for node in nodes}), modules


def stablehlo_ops(module: bytes) -> list[str]:
    """The op names of a serialized StableHLO module (jax2tf's portable
    artifact), read with JAX's own deserializer."""
    from jax._src.interpreters import mlir
    from jax._src.lib import _jax

    with mlir.make_ir_context():
        text = mlir.module_to_string(_jax.mlir.deserialize_portable_artifact(module))
    return sorted(set(re.findall(r"\b(?:stablehlo|chlo|func)\.[a-z_0-9]+", text)))


def serve_saved_model(path: Path, x: np.ndarray, outputs: dict) -> dict:
    import tensorflow as tf

    artifact = tf.saved_model.load(str(path))
    state = [v.numpy() for v in artifact.variables]
    outputs[f"saved_model.{path.name}.0"] = np.asarray(artifact.serve(x))
    outputs[f"saved_model.{path.name}.1"] = np.asarray(artifact.serve(x))
    ops, modules = graph_ops(artifact.signatures["serving_default"])
    return {
        "ops": ops,
        "stablehlo_ops": [stablehlo_ops(module) for module in modules],
        "variables": sorted(v.name for v in artifact.variables),
        "state_unchanged": all(
            np.array_equal(before, v.numpy())
            for before, v in zip(state, artifact.variables, strict=True)
        ),
    }


def serve_onnx(path: Path, x: np.ndarray, outputs: dict) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path))
    feed = {session.get_inputs()[0].name: x}
    for run in range(2):
        outputs[f"onnx.{path.stem}.{run}"] = session.run(None, feed)[0]


def main(directory: Path) -> None:
    x = np.load(directory / "inputs.npy")
    outputs, report = {}, {}
    for path in sorted((directory / "saved_model").glob("*")):
        report[path.name] = serve_saved_model(path, x, outputs)
    for path in sorted((directory / "onnx").glob("*.onnx")):
        serve_onnx(path, x, outputs)
    report["keras_drop_imported"] = sys.modules.get("keras_drop") is not None
    np.savez(directory / "served.npz", **outputs)
    (directory / "served.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
