"""What the benchmark scripts share: the machine line, running one worker
process per backend (the backend is fixed when Keras is imported) and the
rows of timed train steps."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys

BACKENDS = ("jax", "tensorflow", "torch")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def run_worker(script: str, backend: str, args: list[str]) -> list[dict]:
    """Run `script --worker --backend BACKEND *args` under that backend and
    return the JSON rows it prints on stdout."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, script, "--worker", "--backend", backend, *args]
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout)


def step_rows(times: dict[str, list[float]], **columns: dict[str, float]) -> list[dict]:
    """One row per variant of a worker's timed steps (`times`: variant ->
    seconds per step): the median in ms, the number of steps, each of
    `columns` (column -> variant -> value) and the ratio to the first
    variant. Each row is also printed to stderr as it is made."""
    import keras  # the worker's backend, already chosen

    rows = []
    for name, seconds in times.items():
        rows.append(
            {
                "backend": keras.backend.backend(),
                "variant": name,
                "step_ms": 1e3 * statistics.median(seconds),
                "steps": len(seconds),
                **{column: values[name] for column, values in columns.items()},
            }
        )
        print(f"{rows[-1]}", file=sys.stderr, flush=True)
    for row in rows:
        row["ratio"] = row["step_ms"] / rows[0]["step_ms"]
    return rows
