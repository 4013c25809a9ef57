"""The notebooks and the demo run: every notebook in `notebooks/` is executed
from top to bottom with few epochs, and the demo's quick run writes its
pictures. On one backend: what they exercise is tested per backend elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """A compilation cache the notebooks' kernels share: compiling is most
    of what a two-epoch run costs under JAX, and the models of a notebook
    (and the probes `variance_shift` builds) compile the same computations
    again."""
    return tmp_path_factory.mktemp("jax-cache")


@pytest.mark.backends("jax")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(path, monkeypatch, jax_cache):
    # The kernel inherits this process's environment: KERAS_BACKEND, the
    # checkout on the path, and few epochs.
    monkeypatch.setenv("KERAS_DROP_NOTEBOOK_EPOCHS", "2")
    path_entries = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path_entries))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(jax_cache))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)
    errors = [
        output
        for cell in code
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors


@pytest.mark.backends("tensorflow")
def test_demo_quick_run(tmp_path, capsys):
    from keras_drop import demo

    assert demo.main(["--quick", "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| Dropout(0.2) before BN |" in printed
    # The occlusion tables: every digits variant, a column per square size.
    sizes = " | ".join(f"{size}×{size}" for size in demo.OCCLUSIONS)
    for title in ("as trained", "after `recalibrate_batchnorm`"):
        header = f"| occluded digits, {title} | none | {sizes} |"
        rows = printed.split(header)[1].split("\n\n")[0].splitlines()[2:]
        assert [row.split(" | ")[0] for row in rows] == [
            f"| {name}" for name in demo.VARIANTS
        ]
        assert all(row.count("±") == 1 + len(demo.OCCLUSIONS) for row in rows)
    # The MNIST-1D part: 800 training / 200 test sequences in the quick run.
    assert "MNIST-1D, 800 training / 200 test sequences" in printed
    rows = printed.split("| MNIST-1D model |")[1].split("\n\n")[0].splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [
        f"| {name}" for name in demo.MNIST1D_VARIANTS
    ]
    for name in ("learning_curves.png", "mnist1d_curves.png", "mask_gallery.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_occlusion_hides_one_square():
    import numpy as np

    from keras_drop.demo import occlude

    images = np.ones((500, 32, 32, 1), "float32")
    occluded = occlude(images, 12, seed=0)
    hidden = occluded[..., 0] == 0
    assert occluded.dtype == images.dtype
    # One whole 12x12 square per image: 12 rows and 12 columns hidden.
    assert np.all(hidden.sum(axis=(1, 2)) == 144)
    assert np.all(hidden.any(axis=2).sum(axis=1) == 12)
    assert np.all(hidden.any(axis=1).sum(axis=1) == 12)
    # Fixed by the seed; spread over every place where it fits.
    np.testing.assert_array_equal(occlude(images, 12, seed=0), occluded)
    tops = np.argmax(hidden.any(axis=2), axis=1)
    assert tops.min() == 0 and tops.max() == 32 - 12
