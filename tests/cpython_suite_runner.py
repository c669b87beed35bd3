"""Run the interpreter's own ``test.test_socketserver`` and print a JSON summary.

Usage::

    python -I cpython_suite_runner.py --mode stdlib
    python -I cpython_suite_runner.py --mode substituted \
        --expect-under SITE_PACKAGES [--forbid-under SOURCE_DIR ...]

In ``stdlib`` mode the suite runs against the standard ``socketserver`` module,
which gives the baseline (mostly: which tests the interpreter itself skips and
why).  In ``substituted`` mode ``sys.modules["socketserver"]`` is set to
``socketserver_rs`` before the suite is imported, and the runner checks, inside
the same process, that the suite really exercises ``socketserver_rs`` and that
the package was imported from where the caller expects it (an installed copy,
not the source tree).

The unittest output goes to stderr.  The summary is printed on stdout as one
line starting with ``MARKER``, so that stray output (for instance from forked
children) cannot corrupt it.  The exit status is 0 when the run completed and
every check passed, 1 when tests failed, 2 when the harness itself could not
run the suite or a substitution check failed.

This file must stay importable by every interpreter the project supports
(Python 3.9 and newer) and must import nothing outside the standard library.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import unittest
import warnings

MARKER = "@@CPYTHON_SUITE_SUMMARY@@ "
SUITE_MODULE = "test.test_socketserver"


def _is_under(path: str, directory: str) -> bool:
    path = os.path.realpath(path)
    directory = os.path.realpath(directory)
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:  # different drives; cannot happen on POSIX
        return False


def _module_files(module) -> list[str]:
    """Files a package was loaded from: its __init__ and its extension module."""
    files = []
    if getattr(module, "__file__", None):
        files.append(module.__file__)
    core = sys.modules.get(module.__name__ + "._core")
    if core is not None and getattr(core, "__file__", None):
        files.append(core.__file__)
    return files


def _check_origin(module, expect_under: list[str], forbid_under: list[str]) -> list[str]:
    problems = []
    files = _module_files(module)
    if not files:
        problems.append(f"{module.__name__} has no __file__; cannot tell where it came from")
    for path in files:
        if expect_under and not any(_is_under(path, d) for d in expect_under):
            problems.append(f"{module.__name__} file {path!r} is not under any of {expect_under!r}")
        for d in forbid_under:
            if _is_under(path, d):
                problems.append(f"{module.__name__} file {path!r} is under forbidden {d!r}")
    return problems


def _substitute() -> object:
    """Import socketserver_rs and install it as ``socketserver``."""
    if SUITE_MODULE in sys.modules:
        raise RuntimeError(f"{SUITE_MODULE} was imported before the substitution")
    import socketserver_rs

    sys.modules["socketserver"] = socketserver_rs
    return socketserver_rs


_FORK_CLIENT = (
    "import socket, sys; c = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 10); "
    "c.sendall(b'fork\\n'); print(c.recv(16).decode().strip())"
)


def _fork_warnings(module) -> tuple[str, list[str]]:
    """Serve one request with module's ForkingTCPServer from this (single-
    threaded) process: what the client got, and the warnings the fork gave.
    From 3.12 os.fork() warns when other threads exist; the core must not
    have started any."""
    if not hasattr(module, "ForkingTCPServer"):
        return "no fork", []

    class Upper(module.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline().upper())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with module.ForkingTCPServer(("127.0.0.1", 0), Upper) as server:
            server.timeout = 10
            client = subprocess.Popen(
                [sys.executable, "-I", "-c", _FORK_CLIENT, str(server.server_address[1])],
                stdout=subprocess.PIPE,
                text=True,
            )
            server.handle_request()
            reply = client.communicate(timeout=10)[0].strip()
    return reply, [f"{w.category.__name__}: {w.message}" for w in caught]


class _Result(unittest.TextTestResult):
    """TextTestResult that also records per-test durations."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.durations: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def startTest(self, test):
        self._started[test.id()] = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        start = self._started.pop(test.id(), None)
        if start is not None:
            self.durations[test.id()] = round(time.monotonic() - start, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["stdlib", "substituted"], required=True)
    parser.add_argument(
        "--expect-under",
        action="append",
        default=[],
        help="directory socketserver_rs must be imported from (repeatable)",
    )
    parser.add_argument(
        "--forbid-under",
        action="append",
        default=[],
        help="directory socketserver_rs must not be imported from (repeatable)",
    )
    parser.add_argument("--verbosity", type=int, default=2)
    args = parser.parse_args(argv)

    summary: dict = {
        "mode": args.mode,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "checks": [],
        "check_problems": [],
        "harness_error": None,
        "tests_run": 0,
        "failures": [],
        "errors": [],
        "skipped": [],
        "expected_failures": [],
        "unexpected_successes": [],
        "module_skip": None,
        "durations": {},
        "elapsed": None,
    }

    main_pid = os.getpid()

    def emit(code: int) -> int:
        sys.stderr.flush()
        if os.getpid() != main_pid:
            # A forked child of the suite came back here instead of exiting:
            # never let it print a second summary.
            sys.stderr.write(f"stray child process {os.getpid()} reached the runner's end\n")
            sys.stderr.flush()
            os._exit(3)
        sys.stdout.write(MARKER + json.dumps(summary, sort_keys=True) + "\n")
        sys.stdout.flush()
        return code

    started = time.monotonic()
    replacement = None
    try:
        if args.mode == "substituted":
            replacement = _substitute()
            summary["socketserver_rs_file"] = getattr(replacement, "__file__", None)
            summary["socketserver_rs_version"] = replacement._core.__version__
            problems = _check_origin(replacement, args.expect_under, args.forbid_under)
            summary["checks"].append(
                "socketserver_rs origin: " + ", ".join(_module_files(replacement))
            )
            summary["check_problems"].extend(problems)
            reply, fork_warnings = _fork_warnings(replacement)
            if reply not in ("FORK", "no fork") or fork_warnings:
                summary["check_problems"].append(
                    f"ForkingTCPServer from a single-threaded process: reply {reply!r}, "
                    f"warnings {fork_warnings}"
                )
            else:
                summary["checks"].append(f"ForkingTCPServer forks without warnings ({reply})")
        try:
            suite_module = importlib.import_module(SUITE_MODULE)
        except unittest.SkipTest as exc:
            # test.support.requires() & co. raise at import time when the
            # interpreter lacks something the whole module needs.
            summary["module_skip"] = str(exc)
            summary["elapsed"] = round(time.monotonic() - started, 3)
            return emit(0)

        used = getattr(suite_module, "socketserver", None)
        summary["socketserver_file"] = getattr(used, "__file__", None)
        if args.mode == "substituted":
            if used is not replacement:
                summary["check_problems"].append(
                    f"{SUITE_MODULE}.socketserver is {used!r}, not socketserver_rs"
                )
            else:
                summary["checks"].append(f"{SUITE_MODULE}.socketserver is socketserver_rs")
        else:
            if getattr(used, "__name__", None) != "socketserver":
                summary["check_problems"].append(
                    f"{SUITE_MODULE}.socketserver is {used!r}, not the standard module"
                )
        if summary["check_problems"]:
            summary["elapsed"] = round(time.monotonic() - started, 3)
            return emit(2)

        suite = unittest.defaultTestLoader.loadTestsFromModule(suite_module)
        stream = io.StringIO() if args.verbosity < 0 else sys.stderr
        runner = unittest.TextTestRunner(
            stream=stream, verbosity=max(args.verbosity, 0), resultclass=_Result
        )
        result = runner.run(suite)

        # Re-check after the run: nothing inside the suite may have swapped
        # the module back.
        if args.mode == "substituted":
            if sys.modules.get("socketserver") is not replacement:
                summary["check_problems"].append(
                    "sys.modules['socketserver'] is no longer socketserver_rs after the run"
                )
            elif suite_module.socketserver is not replacement:
                summary["check_problems"].append(
                    f"{SUITE_MODULE}.socketserver is no longer socketserver_rs after the run"
                )
            else:
                summary["checks"].append("substitution still in place after the run")

        summary["tests_run"] = result.testsRun
        summary["failures"] = [{"id": t.id(), "traceback": tb} for t, tb in result.failures]
        summary["errors"] = [{"id": t.id(), "traceback": tb} for t, tb in result.errors]
        summary["skipped"] = [{"id": t.id(), "reason": r} for t, r in result.skipped]
        summary["expected_failures"] = [t.id() for t, _ in result.expectedFailures]
        summary["unexpected_successes"] = [t.id() for t in result.unexpectedSuccesses]
        summary["durations"] = result.durations
        summary["elapsed"] = round(time.monotonic() - started, 3)
        if summary["check_problems"]:
            return emit(2)
        return emit(0 if result.wasSuccessful() else 1)
    except BaseException:  # report anything, including SystemExit from the suite
        summary["harness_error"] = traceback.format_exc()
        summary["elapsed"] = round(time.monotonic() - started, 3)
        return emit(2)


if __name__ == "__main__":
    sys.exit(main())
