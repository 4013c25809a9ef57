#!/usr/bin/env python3
"""Developer tasks for keras_drop, needing nothing but Python 3.10+.

    python3 tasks.py demo [demo options]   # set up .venv, run the demo
    python3 tasks.py test [pytest options] # set up .venv, run the suite on
                                           # TensorFlow, JAX and PyTorch

Each command creates `.venv/` (or reuses it while `pyproject.toml` is
unchanged) and installs the package with every backend. `test` runs pytest
once per backend with `KERAS_BACKEND` set, and fails if any run fails or
collects no test. `--backend NAME` (repeatable) limits the backends.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BACKENDS = ("tensorflow", "jax", "torch")
EXTRAS = "tensorflow,jax,torch,test,demo,onnx"


def venv_python() -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    return VENV / scripts / ("python.exe" if os.name == "nt" else "python")


def ensure_venv() -> Path:
    """Create .venv and install the package; skip when already up to date."""
    digest = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()
    ).hexdigest()
    stamp = VENV / ".keras_drop-installed"
    python = venv_python()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    if not python.exists():
        print(f"Creating virtualenv in {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "--quiet", "--upgrade", "pip"], check=True)
    print(f"Installing keras-drop[{EXTRAS}] into {VENV}", flush=True)
    subprocess.run([*pip, "--quiet", "-e", f".[{EXTRAS}]"], cwd=ROOT, check=True)
    stamp.write_text(digest)
    return python


def run_demo(args: list[str]) -> int:
    python = ensure_venv()
    return subprocess.call([str(python), "-m", "keras_drop.demo", *args], cwd=ROOT)


def _counts(junit: Path) -> dict[str, int]:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if not junit.exists():
        return counts
    root = ET.parse(junit).getroot()
    for suite in root.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    return counts


def run_tests(backends: list[str], pytest_args: list[str]) -> int:
    """Run the suite once per backend, concurrently, and print each log."""
    python = ensure_venv()
    tmp = Path(tempfile.mkdtemp(prefix="keras_drop-tests-"))
    procs = {}
    start = time.monotonic()
    for backend in backends:
        log = open(tmp / f"{backend}.log", "w")
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        cmd = [
            str(python),
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--junitxml={tmp / backend}.xml",
            *pytest_args,
        ]
        procs[backend] = (
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log),
            log,
        )
        print(
            f"[{backend}] started: KERAS_BACKEND={backend} {' '.join(cmd[1:])}",
            flush=True,
        )

    results = {}
    for backend, (proc, log) in procs.items():
        code = proc.wait()
        log.close()
        elapsed = time.monotonic() - start
        print(
            f"\n{'=' * 30} KERAS_BACKEND={backend} (exit {code}, "
            f"{elapsed:.0f}s) {'=' * 30}",
            flush=True,
        )
        print((tmp / f"{backend}.log").read_text(), flush=True)
        results[backend] = (code, _counts(tmp / f"{backend}.xml"))

    print("\nSummary")
    failed_backends = []
    passed = failed = skipped = 0
    for backend, (code, c) in results.items():
        n_failed = c["failures"] + c["errors"]
        n_passed = c["tests"] - n_failed - c["skipped"]
        passed, failed, skipped = (
            passed + n_passed,
            failed + n_failed,
            skipped + c["skipped"],
        )
        # pytest's exit code 5 means no test was collected: a failure here.
        ok = code == 0 and c["tests"] > 0
        if not ok:
            failed_backends.append(backend)
        print(
            f"  {backend:<10} exit {code}: {n_passed} passed, {n_failed} failed, "
            f"{c['skipped']} skipped{'' if ok else '  <-- FAILED'}"
        )
    if failed_backends:
        print(f"FAILED on: {', '.join(failed_backends)}")
        failed = max(failed, 1)
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed_backends else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="task", required=True)
    sub.add_parser("demo", help="run the demo", add_help=False)
    test = sub.add_parser(
        "test", help="run the test suite on every backend", add_help=False
    )
    test.add_argument("--backend", action="append", choices=BACKENDS)
    args, rest = parser.parse_known_args()
    if args.task == "demo":
        return run_demo(rest)
    return run_tests(args.backend or list(BACKENDS), rest)


if __name__ == "__main__":
    sys.exit(main())
