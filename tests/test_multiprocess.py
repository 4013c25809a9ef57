"""Training in several processes on this host's CPU, each engine on its
backend's run: TensorFlow `MultiWorkerMirroredStrategy`, JAX
`jax.distributed` with `keras.distribution.DataParallel` (and
`ModelParallel` on two host devices of one process), PyTorch
DistributedDataParallel around a Keras model.

Every test starts its own processes (`tests/multiprocess_<engine>.py`),
each built with the same seed, talking over free loopback ports chosen
here; every process is bounded in time and killed, with its children, if
the test fails. The processes write what they saw (`multiprocess_worker`)
and the tests compare it across processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.helpers import ROOT, fresh_process_env, run_in_fresh_process
from tests.test_distributed import PER_BATCH, PER_SAMPLE

BACKEND = keras.backend.backend()
TIMEOUT = 240  # seconds, for every process (XLA compiles slowly on a loaded CPU)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_all(processes: list[subprocess.Popen]) -> list[int] | None:
    """The exit codes once every process has exited; as soon as one fails
    (its peers would wait for it) or after `TIMEOUT` seconds, None."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        codes = [process.poll() for process in processes]
        if any(code for code in codes):
            return None
        if all(code == 0 for code in codes):
            return codes
        time.sleep(0.2)
    return None


def _run_processes(script: str, directory: Path, envs: list[dict]) -> list[dict]:
    """Runs `python -m tests.SCRIPT DIR RANK` once per rank, each with its
    environment; returns each rank's report once all have succeeded."""
    cpu_only = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    processes, logs = [], []
    try:
        for rank, env in enumerate(envs):
            log = open(directory / f"rank{rank}.log", "w")  # noqa: SIM115
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        f"tests.{script}",
                        str(directory),
                        str(rank),
                    ],
                    cwd=ROOT,
                    env=fresh_process_env({**cpu_only, **env}),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group, to kill it whole
                )
            )
        codes = _wait_all(processes)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for log in logs:
            log.close()
    if codes is None or any(codes):
        output = "\n".join(
            f"--- rank {rank}:\n{(directory / f'rank{rank}.log').read_text()[-4000:]}"
            for rank in range(len(envs))
        )
        raise AssertionError(
            f"{script}: a process failed or ran over {TIMEOUT} s\n{output}"
        )
    return [dict(np.load(directory / f"rank{rank}.npz")) for rank in range(len(envs))]


def _assert_trained_in_sync_with_one_schedule(reports: list[dict]) -> None:
    first, second = reports
    weights = [key for key in first if key.startswith("weight_")]
    assert len(weights) > 10
    for key in weights:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    # The same rates in every step on both, rising from zero to the
    # configured rates (epochs x steps updates).
    np.testing.assert_array_equal(first["rates"], second["rates"])
    rates = first["rates"]
    progress = np.linspace(0.0, 1.0, len(rates))[:, None]
    assert len(rates) == 6 and np.all(rates[-1] > 0)
    np.testing.assert_allclose(rates, progress * rates[-1], rtol=1e-6)


def _masks_differ(reports: list[dict], names: list[str]) -> dict[str, bool]:
    first, second = reports
    return {
        name: not np.array_equal(first[f"mask_{name}"], second[f"mask_{name}"])
        for name in names
    }


@pytest.mark.backends(
    "tensorflow", reason="MultiWorkerMirroredStrategy is TensorFlow's engine"
)
def test_multi_worker_mirrored_strategy(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    envs = [
        {
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": rank}}
            )
        }
        for rank in range(2)
    ]
    reports = _run_processes("multiprocess_tf", tmp_path, envs)
    _assert_trained_in_sync_with_one_schedule(reports)
    # Each worker is one replica: every draw is its own.
    assert _masks_differ(reports, PER_SAMPLE + PER_BATCH) == dict.fromkeys(
        PER_SAMPLE + PER_BATCH, True
    )


def _loopback_coordinator() -> dict[str, str]:
    return {"KERAS_DROP_COORDINATOR": f"127.0.0.1:{_free_ports(1)[0]}"}


@pytest.mark.backends("torch", reason="DistributedDataParallel is torch's engine")
def test_torch_distributed_data_parallel(tmp_path):
    coordinator = _loopback_coordinator()
    reports = _run_processes("multiprocess_torch", tmp_path, [coordinator] * 2)
    _assert_trained_in_sync_with_one_schedule(reports)
    # Each rank is a replica: every draw is its own (the seed generators
    # fold the rank in).
    assert _masks_differ(reports, PER_SAMPLE + PER_BATCH) == dict.fromkeys(
        PER_SAMPLE + PER_BATCH, True
    )


# Every JAX process: its own compiles, as fast as XLA's CPU backend builds
# them (the programs are small; optimizing them is what takes time).
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


@pytest.mark.backends("jax", reason="jax.distributed is JAX's engine")
def test_jax_distributed_data_parallel(tmp_path):
    env = {**_loopback_coordinator(), "XLA_FLAGS": FAST_XLA}
    reports = _run_processes("multiprocess_jax", tmp_path, [env] * 2)
    _assert_trained_in_sync_with_one_schedule(reports)
    # One SPMD program over the global batch, each process holding a shard:
    # masks drawn per sample differ between the processes' shards, and a
    # draw made once per batch is made once for the global batch, shared by
    # its shards as on one device (and by DataParallel in one process).
    differ = _masks_differ(reports, PER_SAMPLE + PER_BATCH)
    assert differ == {name: name in PER_SAMPLE for name in PER_SAMPLE + PER_BATCH}


@pytest.mark.backends("jax", reason="keras.distribution.ModelParallel is JAX's")
def test_jax_model_parallel_trains_and_draws_the_single_device_masks(tmp_path):
    flags = f"{os.environ.get('XLA_FLAGS', '')} {FAST_XLA}"
    run_in_fresh_process(
        ["-m", "tests.multiprocess_jax", str(tmp_path), "model_parallel"],
        env={"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2"},
        timeout=TIMEOUT,
    )
    report = dict(np.load(tmp_path / "model_parallel.npz"))
    assert np.all(np.isfinite(report["loss"])) and report["trained"].all()
    # The conv's 4 filters, two on each device.
    assert report["kernel_shards"].tolist() == [[3, 3, 3, 2]] * 2
    assert report["single_devices"] == 1
    # DropBlock2D's output and StochasticDepth's, from the same weights and
    # seed states: the same masks, the same values.
    sharded, single = report["sharded"], report["single"]
    np.testing.assert_array_equal(sharded == 0, single == 0)
    assert 0.1 < np.mean(single[0] == 0) < 0.6  # DropBlock dropped units
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)
