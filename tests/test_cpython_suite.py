"""Run CPython's own test suites of socketserver and of the servers built on
it against socketserver_rs.

For every CPython 3.9-3.15 found (newest patch release of each minor version
under ``$(pyenv root)/versions``, and ``build/cpython/3.N/bin/python3.N``, where
``.ci/run`` makes 3.14 and 3.15 from Debian's packages), the project is built and installed as a
real wheel into a venv kept in ``build/venvs/`` (gitignored), once per pytest
session, and each of the interpreter's own suites in ``SUITES`` is run twice
in that venv by ``cpython_suite_runner.py``, side by side: once against the
standard ``socketserver`` (the baseline: which tests that interpreter skips
anyway) and once after ``socketserver_rs.patch()``, so that ``socketserver``
and the standard library's servers built on it (http.server, xmlrpc.server,
wsgiref.simple_server, logging.config.listen) run on socketserver_rs.  The
same is done for the interpreter running pytest, where the package must
already be installed.

Every run must have no failures and no errors, must run as many tests as the
baseline, must skip nothing that the standard module does not skip as well,
and must show that the servers under test derive from socketserver_rs.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os
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

# The interpreter's suites, each with the tests to run: None for all of it,
# else regular expressions matched against the test ids.  Of test_logging,
# the handlers that talk to servers built on socketserver (socket, datagram,
# syslog and HTTP handlers, with their Unix and IPv6 variants) and
# logging.config.listen().
SUITES: dict[str, Optional[list[str]]] = {
    "test.test_socketserver": None,
    "test.test_httpservers": None,
    "test.test_xmlrpc": None,
    "test.test_docxmlrpc": None,
    "test.test_wsgiref": None,
    "test.test_logging": [
        r"\.(Unix|IPv6)?(Socket|Datagram|SysLog|HTTP)HandlerTest\.",
        r"\.Config(Dict|File)Test\.test_listen_",
    ],
}

VENV_TIMEOUT = 180
BUILD_TIMEOUT = 15 * 60
SUITE_TIMEOUT = 5 * 60
# One test: venv + build (the first for an interpreter) + the two suite runs,
# side by side, with margin.
PER_SUITE_TIMEOUT = VENV_TIMEOUT + BUILD_TIMEOUT + SUITE_TIMEOUT + 60


def _timeout_mark(seconds: int):
    """pytest-timeout's mark when the plugin is there, else no mark at all."""
    if importlib.util.find_spec("pytest_timeout") is None:
        return lambda func: func
    return pytest.mark.timeout(seconds)


# --------------------------------------------------------------------------
# Finding interpreters


def _interpreter_finder():
    """scripts/build-wheels.py, which holds the one definition of where the
    interpreters are (pyenv, then build/cpython) for the wheels and here."""
    path = REPO_ROOT / "scripts" / "build-wheels.py"
    spec = importlib.util.spec_from_file_location("build_wheels", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_finder = _interpreter_finder()
pyenv_root = _finder.pyenv_root
find_interpreters = _finder.find_interpreters
assert _finder.MADE_INTERPRETERS_DIR == MADE_INTERPRETERS_DIR
assert _finder.SUPPORTED_MINORS == SUPPORTED_MINORS


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


def _build_venv(minor: int, base_exe: Path) -> Path:
    """Venv for ``base_exe`` with the current source built and installed."""
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


@functools.cache
def _venv_once(minor: int, base_exe: Path) -> tuple[Optional[Path], str]:
    """The venv built once per session: (python, "") or (None, why not), so
    that a failed build fails every suite of that interpreter at once
    instead of being tried again for each."""
    try:
        return _build_venv(minor, base_exe), ""
    except pytest.fail.Exception as exc:
        return None, str(exc)


def prepare_venv(minor: int, base_exe: Path) -> Path:
    """The venv of ``base_exe`` with the current source installed, built at
    the first call of the session."""
    python, failure = _venv_once(minor, base_exe)
    if python is None:
        pytest.fail(failure, pytrace=False)
    return python


def _site_dirs(python: str) -> list[str]:
    probe = (
        "import json, sysconfig; "
        "print(json.dumps(sorted({sysconfig.get_path('purelib'), sysconfig.get_path('platlib')})))"
    )
    proc = _run([python, "-I", "-c", probe], timeout=60, what="query site-packages")
    return json.loads(proc.stdout)


@functools.cache
def _origin_args(python: str) -> tuple[str, ...]:
    """Where the substituted run must find socketserver_rs, and where not."""
    args: list[str] = []
    for d in _site_dirs(python):
        args += ["--expect-under", d]
    for d in SOURCE_DIRS:
        args += ["--forbid-under", str(d)]
    return tuple(args)


# --------------------------------------------------------------------------
# Running the suite


class _SuiteRun:
    """One run of the runner, started at once; ``summary()`` waits for it."""

    def __init__(
        self, python: str, mode: str, runner_args: list[str], tmp_path: Path, suite: str
    ) -> None:
        self.mode = mode
        workdir = tmp_path / mode
        workdir.mkdir()
        # -I: no script directory, no current directory, no PYTHON* variables
        # on sys.path, so the only socketserver_rs in reach is the installed one.
        selection = [arg for pattern in SUITES[suite] or [] for arg in ("--select", pattern)]
        self.cmd = [python, "-I", str(RUNNER), "--mode", mode, "--suite", suite]
        self.cmd += selection + runner_args
        self.start = time.monotonic()
        # Output to files, not pipes: nothing to drain while the other run goes.
        self.out = open(workdir / "stdout", "w+")
        self.err = open(workdir / "stderr", "w+")
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self.out,
            stderr=self.err,
            cwd=str(workdir),  # the suites create Unix sockets in the cwd
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
        )

    def _output(self) -> tuple[str, str]:
        texts = []
        for fh in (self.out, self.err):
            fh.seek(0)
            texts.append(fh.read())
            fh.close()
        return texts[0], texts[1]

    def summary(self) -> dict[str, Any]:
        left = max(1.0, SUITE_TIMEOUT - (time.monotonic() - self.start))
        try:
            self.proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            out, err = self._output()
            pytest.fail(
                f"{self.mode} suite run timed out after {SUITE_TIMEOUT}s\n$ {' '.join(self.cmd)}\n"
                f"--- stdout ---\n{_tail(out)}\n--- stderr ---\n{_tail(err, 120)}",
                pytrace=False,
            )
        out, err = self._output()
        summaries = [line[len(MARKER) :] for line in out.splitlines() if line.startswith(MARKER)]
        if len(summaries) != 1:
            pytest.fail(
                f"{self.mode} suite run printed {len(summaries)} summaries "
                f"(exit {self.proc.returncode})\n$ {' '.join(self.cmd)}\n"
                f"--- stdout ---\n{_tail(out)}\n--- stderr ---\n{_tail(err, 120)}",
                pytrace=False,
            )
        summary = json.loads(summaries[0])
        summary["returncode"] = self.proc.returncode
        summary["stderr"] = err
        # Waited for after the other run: up to then, not the run's own time.
        summary["wall"] = round(time.monotonic() - self.start, 1)
        return summary

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fh in (self.out, self.err):
            fh.close()


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
    elif subst["tests_run"] != baseline.get("tests_run"):
        problems.append(
            f"{subst['tests_run']} tests ran, {baseline.get('tests_run')} with the standard module"
        )
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


def check_suite(
    label: str, python: str, suite: str, runner_args: list[str], tmp_path: Path
) -> None:
    # The two runs side by side: the suites mostly wait (timeouts, sleeps).
    runs = [_SuiteRun(python, "stdlib", [], tmp_path, suite)]
    try:
        runs.append(_SuiteRun(python, "substituted", runner_args, tmp_path, suite))
        baseline, subst = (run.summary() for run in runs)
    finally:
        for run in runs:
            run.stop()

    def line(summary: dict[str, Any]) -> str:
        return (
            f"{summary['tests_run']} run, {len(summary['failures'])} failures, "
            f"{len(summary['errors'])} errors, {len(summary['skipped'])} skipped "
            f"({summary['elapsed']}s)"
        )

    print(
        f"{label} {suite}: Python {subst['python']} ({subst['executable']})\n"
        f"  stdlib:          {line(baseline)}\n"
        f"  socketserver_rs: {line(subst)}"
    )
    for check in subst.get("checks", []):
        print(f"  check: {check}")
    for skip in subst.get("skipped", []):
        print(f"  skipped: {skip['id']}: {skip['reason']}")
    if baseline.get("harness_error") or baseline.get("check_problems"):
        pytest.fail(
            f"{label}: baseline run of {suite} with the standard socketserver is broken:\n"
            f"{baseline.get('harness_error') or baseline.get('check_problems')}",
            pytrace=False,
        )

    problems = _format_report(label, baseline, subst)
    if problems:
        report = f"\n{'=' * 70}\n".join(problems)
        pytest.fail(
            f"{label}: {suite} under socketserver_rs: {len(subst['failures'])} "
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


# Interpreter by interpreter, so that each venv is built just before its
# suites run.
@_timeout_mark(PER_SUITE_TIMEOUT)
@pytest.mark.parametrize(
    "minor,base_exe,suite",
    [(minor, exe, suite) for (_, minor), exe in INTERPRETERS.items() for suite in SUITES],
    ids=[
        f"cp3{minor}-{suite.rpartition('.')[2]}" for (_, minor) in INTERPRETERS for suite in SUITES
    ],
)
def test_cpython_suite(minor: int, base_exe: Path, suite: str, tmp_path: Path) -> None:
    python = str(prepare_venv(minor, base_exe))
    check_suite(f"cp3{minor}", python, suite, list(_origin_args(python)), tmp_path)


@_timeout_mark(SUITE_TIMEOUT + 60)
@pytest.mark.parametrize("suite", list(SUITES), ids=[s.rpartition(".")[2] for s in SUITES])
def test_cpython_suite_running_interpreter(suite: str, tmp_path: Path) -> None:
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
    check_suite(label, sys.executable, suite, args, tmp_path)
