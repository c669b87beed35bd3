"""Run CPython's own ``test.test_socketserver`` against socketserver_rs.

For every CPython 3.9-3.15 found (newest patch release of each minor version
under ``$(pyenv root)/versions``, and ``build/cpython/3.N/bin/python3.N``, where
``.ci/run`` makes 3.14 and 3.15 from Debian's packages), the project is built and installed as a
real wheel into a venv kept in ``build/venvs/`` (gitignored), and the
interpreter's own ``test.test_socketserver`` is run twice in that venv by
``cpython_suite_runner.py``: once against the standard ``socketserver`` (the
baseline: which tests that interpreter skips anyway) and once with
``sys.modules["socketserver"]`` set to ``socketserver_rs``.  The same is done
for the interpreter running pytest, where the package must already be
installed.

Every run must have no failures and no errors, must run tests, and must skip
nothing that the standard module does not skip as well.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from conftest import require

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
RUNNER = TESTS_DIR / "cpython_suite_runner.py"
BUILD_DIR = REPO_ROOT / "build"
VENVS_DIR = BUILD_DIR / "venvs"
CARGO_TARGET_DIR = BUILD_DIR / "cargo-target"
# Where the package's sources live: an import from here means the suite is not
# testing an installed build.
SOURCE_DIRS = [REPO_ROOT / "python", REPO_ROOT / "src"]

pytestmark = pytest.mark.slow

SUPPORTED_MINORS = range(9, 16)  # 3.9 .. 3.15
# Interpreters made for the tests (see .ci/run): build/cpython/3.N/bin/python3.N.
MADE_INTERPRETERS_DIR = BUILD_DIR / "cpython"
MARKER = "@@CPYTHON_SUITE_SUMMARY@@ "

VENV_TIMEOUT = 180
BUILD_TIMEOUT = 15 * 60
SUITE_TIMEOUT = 5 * 60
# Whole test for one interpreter: venv + build + two suite runs, with margin.
PER_INTERPRETER_TIMEOUT = VENV_TIMEOUT + BUILD_TIMEOUT + 2 * SUITE_TIMEOUT + 60


def _timeout_mark(seconds: int):
    """pytest-timeout's mark when the plugin is there, else no mark at all."""
    if importlib.util.find_spec("pytest_timeout") is None:
        return lambda func: func
    return pytest.mark.timeout(seconds)


# --------------------------------------------------------------------------
# Finding interpreters


def pyenv_root() -> Path:
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            out = subprocess.run(
                [pyenv, "root"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            return Path(out)
    env = os.environ.get("PYENV_ROOT")
    if env:
        return Path(env)
    return Path.home() / ".pyenv"


def find_interpreters() -> dict[tuple[int, int], Path]:
    """Newest patch release of each CPython 3.9-3.15 under the pyenv root,
    then the ones made under build/cpython for minor versions pyenv lacks."""
    versions_dir = pyenv_root() / "versions"
    best: dict[tuple[int, int], tuple[int, Path]] = {}
    entries = list(versions_dir.iterdir()) if versions_dir.is_dir() else []
    for entry in entries:
        # Plain CPython releases only: "3.12.1", not "3.13.0t", "3.12-dev",
        # "pypy3.10-7.3.12" or "miniconda3-latest".
        m = re.fullmatch(r"3\.(\d+)\.(\d+)", entry.name)
        if not m:
            continue
        minor, patch = int(m.group(1)), int(m.group(2))
        if minor not in SUPPORTED_MINORS:
            continue
        exe = entry / "bin" / f"python3.{minor}"
        if not exe.is_file() or not os.access(exe, os.X_OK):
            continue
        if (3, minor) not in best or patch > best[(3, minor)][0]:
            best[(3, minor)] = (patch, exe)
    for minor in SUPPORTED_MINORS:
        exe = MADE_INTERPRETERS_DIR / f"3.{minor}" / "bin" / f"python3.{minor}"
        if (3, minor) not in best and os.access(exe, os.X_OK):
            best[(3, minor)] = (0, exe)
    return {key: exe for key, (_, exe) in sorted(best.items())}


INTERPRETERS = find_interpreters()


def _is_running_interpreter(exe: Path) -> bool:
    install = exe.resolve().parent.parent
    return install == Path(sys.base_prefix).resolve()


# --------------------------------------------------------------------------
# Subprocess helpers


def _clean_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PIP_USER"):
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def _tail(text: str, lines: int = 60) -> str:
    parts = text.rstrip().splitlines()
    if len(parts) > lines:
        parts = [f"[... {len(parts) - lines} lines cut ...]"] + parts[-lines:]
    return "\n".join(parts)


def _run(cmd: list[str], *, timeout: int, what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command; fail the test with its output if it fails or hangs."""
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        err = exc.stderr or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        pytest.fail(
            f"{what}: timed out after {timeout}s\n$ {' '.join(cmd)}\n"
            f"--- stdout ---\n{_tail(out)}\n--- stderr ---\n{_tail(err)}",
            pytrace=False,
        )
    print(f"[{what}] exit {proc.returncode} in {time.monotonic() - start:.1f}s")
    if proc.returncode != 0:
        pytest.fail(
            f"{what}: exit status {proc.returncode}\n$ {' '.join(cmd)}\n"
            f"--- stdout ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr)}",
            pytrace=False,
        )
    return proc


class _BuildLock:
    """One build at a time, even if several pytest processes share the repo."""

    def __enter__(self) -> _BuildLock:
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        self._fh = open(BUILD_DIR / ".cpython-suite-build.lock", "w")
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


# --------------------------------------------------------------------------
# Venv + wheel build


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _venv_matches(venv: Path, base_exe: Path) -> bool:
    """True when the venv exists and was made from this very interpreter."""
    py = _venv_python(venv)
    if not py.exists():
        return False
    probe = "import sys; print(sys.base_prefix); print(sys.version)"
    try:
        mine = subprocess.run(
            [str(py), "-I", "-c", probe], capture_output=True, text=True, timeout=60
        )
        base = subprocess.run(
            [str(base_exe), "-I", "-c", probe], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return mine.returncode == 0 and mine.stdout == base.stdout


def prepare_venv(minor: int, base_exe: Path) -> Path:
    """Fresh-enough venv for ``base_exe`` with the current source installed."""
    venv = VENVS_DIR / f"cp3{minor}"
    with _BuildLock():
        if not _venv_matches(venv, base_exe):
            VENVS_DIR.mkdir(parents=True, exist_ok=True)
            _run(
                [str(base_exe), "-m", "venv", "--clear", str(venv)],
                timeout=VENV_TIMEOUT,
                what=f"create venv for 3.{minor}",
                env=_clean_env(),
            )
        # Non-editable: pip builds a real wheel for this interpreter with the
        # build backend (maturin) that it fetches itself.  Cargo's target
        # directory is shared so that dependencies compile once.
        _run(
            [
                str(_venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--force-reinstall",
                "--no-deps",
                str(REPO_ROOT),
            ],
            timeout=BUILD_TIMEOUT,
            what=f"build and install socketserver_rs for 3.{minor}",
            cwd=str(REPO_ROOT),
            env=_clean_env(CARGO_TARGET_DIR=str(CARGO_TARGET_DIR)),
        )
    return _venv_python(venv)


def _site_dirs(python: str) -> list[str]:
    probe = (
        "import json, sysconfig; "
        "print(json.dumps(sorted({sysconfig.get_path('purelib'), sysconfig.get_path('platlib')})))"
    )
    proc = _run([python, "-I", "-c", probe], timeout=60, what="query site-packages")
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------
# Running the suite


def run_suite(python: str, mode: str, runner_args: list[str], tmp_path: Path) -> dict[str, Any]:
    workdir = tmp_path / mode
    workdir.mkdir()
    # -I: no script directory, no current directory, no PYTHON* variables on
    # sys.path, so the only socketserver_rs in reach is the installed one.
    cmd = [python, "-I", str(RUNNER), "--mode", mode, *runner_args]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=SUITE_TIMEOUT,
            cwd=str(workdir),  # the suite creates Unix sockets in the cwd
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(
            f"{mode} suite run timed out after {SUITE_TIMEOUT}s\n$ {' '.join(cmd)}\n"
            f"--- stdout ---\n{_tail(out)}\n--- stderr ---\n{_tail(err, 120)}",
            pytrace=False,
        )
    summaries = [
        line[len(MARKER) :] for line in proc.stdout.splitlines() if line.startswith(MARKER)
    ]
    if len(summaries) != 1:
        pytest.fail(
            f"{mode} suite run printed {len(summaries)} summaries (exit {proc.returncode})\n"
            f"$ {' '.join(cmd)}\n"
            f"--- stdout ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr, 120)}",
            pytrace=False,
        )
    summary = json.loads(summaries[0])
    summary["returncode"] = proc.returncode
    summary["stderr"] = proc.stderr
    summary["wall"] = round(time.monotonic() - start, 1)
    return summary


def _format_report(label: str, baseline: dict[str, Any], subst: dict[str, Any]) -> list[str]:
    """Problems found in the substituted run, each readable on its own."""
    problems: list[str] = []
    if subst.get("harness_error"):
        problems.append(f"the runner itself failed:\n{subst['harness_error']}")
    for problem in subst.get("check_problems", []):
        problems.append(f"substitution check failed: {problem}")
    if subst.get("module_skip"):
        problems.append(f"whole module skipped: {subst['module_skip']}")
    if not subst.get("tests_run"):
        problems.append("no test ran")
    baseline_bad = {e["id"] for e in baseline.get("failures", []) + baseline.get("errors", [])}
    for kind in ("failures", "errors"):
        for item in subst.get(kind, []):
            note = (
                " (also fails with the standard socketserver here)"
                if item["id"] in baseline_bad
                else ""
            )
            problems.append(f"{kind[:-1].upper()}: {item['id']}{note}\n{item['traceback']}")
    baseline_skips = {s["id"] for s in baseline.get("skipped", [])}
    for skip in subst.get("skipped", []):
        if skip["id"] not in baseline_skips:
            problems.append(f"SKIPPED under socketserver_rs only: {skip['id']}: {skip['reason']}")
    if subst.get("unexpected_successes"):
        problems.append(f"unexpected successes: {subst['unexpected_successes']}")
    if problems and subst.get("stderr"):
        problems.append(f"--- unittest output (tail) ---\n{_tail(subst['stderr'], 80)}")
    return problems


def check_interpreter(label: str, python: str, runner_args: list[str], tmp_path: Path) -> None:
    baseline = run_suite(python, "stdlib", [], tmp_path)
    subst = run_suite(python, "substituted", runner_args, tmp_path)

    print(
        f"{label}: Python {subst['python']} ({subst['executable']})\n"
        f"  stdlib:          {baseline['tests_run']} run, {len(baseline['failures'])} failures, "
        f"{len(baseline['errors'])} errors, {len(baseline['skipped'])} skipped "
        f"({baseline['wall']}s)\n"
        f"  socketserver_rs: {subst['tests_run']} run, {len(subst['failures'])} failures, "
        f"{len(subst['errors'])} errors, {len(subst['skipped'])} skipped ({subst['wall']}s)"
    )
    for check in subst.get("checks", []):
        print(f"  check: {check}")
    for skip in subst.get("skipped", []):
        print(f"  skipped: {skip['id']}: {skip['reason']}")
    if baseline.get("harness_error") or baseline.get("check_problems"):
        pytest.fail(
            f"{label}: baseline run with the standard socketserver is broken:\n"
            f"{baseline.get('harness_error') or baseline.get('check_problems')}",
            pytrace=False,
        )

    problems = _format_report(label, baseline, subst)
    if problems:
        report = f"\n{'=' * 70}\n".join(problems)
        pytest.fail(
            f"{label}: test.test_socketserver under socketserver_rs: {len(subst['failures'])} "
            f"failures, {len(subst['errors'])} errors, {subst['tests_run']} run\n\n{report}",
            pytrace=False,
        )


# --------------------------------------------------------------------------
# The tests


def test_other_interpreters_available() -> None:
    """CI must not pass quietly on a machine without the pyenv interpreters;
    elsewhere their absence is reported as a skip."""
    others = [exe for exe in INTERPRETERS.values() if not _is_running_interpreter(exe)]
    require(
        others,
        f"no CPython 3.9-3.15 besides the running one found under "
        f"{pyenv_root() / 'versions'} or {MADE_INTERPRETERS_DIR}; found {sorted(INTERPRETERS)}",
    )


def test_the_newest_interpreters_available() -> None:
    """3.14 and 3.15, the two newest releases, are what new users have."""
    missing = [f"3.{minor}" for minor in (14, 15) if (3, minor) not in INTERPRETERS]
    require(
        not missing,
        f"CPython {', '.join(missing)} not found; .ci/run makes them under "
        f"{MADE_INTERPRETERS_DIR} with the shared make-cpython.sh",
    )


@_timeout_mark(PER_INTERPRETER_TIMEOUT)
@pytest.mark.parametrize(
    "minor,base_exe",
    [(minor, exe) for (_, minor), exe in INTERPRETERS.items()],
    ids=[f"cp3{minor}" for (_, minor) in INTERPRETERS],
)
def test_cpython_suite(minor: int, base_exe: Path, tmp_path: Path) -> None:
    python = str(prepare_venv(minor, base_exe))
    args: list[str] = []
    for d in _site_dirs(python):
        args += ["--expect-under", d]
    for d in SOURCE_DIRS:
        args += ["--forbid-under", str(d)]
    check_interpreter(f"cp3{minor}", python, args, tmp_path)


@_timeout_mark(2 * SUITE_TIMEOUT + 60)
def test_cpython_suite_running_interpreter(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("socketserver_rs")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            f"socketserver_rs is not installed for {sys.executable}; "
            f"install the project first (pip install .)",
            pytrace=False,
        )
    # The suite must import the same copy that this environment resolves.
    location: Optional[str] = list(spec.submodule_search_locations)[0]
    args = ["--expect-under", str(Path(location).resolve())]
    label = f"running interpreter {sys.version_info[0]}.{sys.version_info[1]}"
    check_interpreter(label, sys.executable, args, tmp_path)
