"""What the benchmark scripts share: the machine line and running one worker
process per backend (the backend is fixed when Keras is imported)."""

from __future__ import annotations

import json
import os
import platform
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
