"""Run one of the interpreter's own test suites and print a JSON summary.

Usage::

    python -I cpython_suite_runner.py --mode stdlib [--suite MODULE] [--select REGEX ...]
    python -I cpython_suite_runner.py --mode substituted [--suite MODULE] [--select REGEX ...] \
        --expect-under SITE_PACKAGES [--forbid-under SOURCE_DIR ...]

The suite is ``test.test_socketserver`` unless ``--suite`` names another one:
the suites of the standard library's servers built on ``socketserver``
(``test.test_httpservers``, ``test.test_xmlrpc``, ``test.test_docxmlrpc``,
``test.test_wsgiref``, ``test.test_logging``).  ``--select`` keeps only the
tests whose id matches one of the regular expressions (``re.search``), for
suites of which only a part is about these servers.

In ``stdlib`` mode the suite runs against the standard ``socketserver`` module,
which gives the baseline (mostly: which tests the interpreter itself skips and
why).  In ``substituted`` mode ``socketserver_rs.patch()`` makes ``import
socketserver`` resolve to ``socketserver_rs`` before the suite and the servers
it tests are imported, and the runner checks, inside the same process, that
the suite really exercises ``socketserver_rs`` (the servers it tests derive
from its classes) and that the package was imported from where the caller
expects it (an installed copy, not the source tree).  The same derivation
checks run in ``stdlib`` mode against the standard module, so that a check
that could not fail is noticed.

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
import re
import subprocess
import sys
import time
import traceback
import unittest
import warnings

MARKER = "@@CPYTHON_SUITE_SUMMARY@@ "
DEFAULT_SUITE = "test.test_socketserver"

# The standard library's modules whose servers derive from socketserver's
# classes.  patch() must come before any of them is imported.
BUILT_ON_SOCKETSERVER = ("http.server", "xmlrpc.server", "wsgiref.simple_server", "logging.config")

# For each suite, the servers it tests: (module, class, socketserver class it
# must derive from).  The suite's own ``socketserver`` global, when it has
# one, is checked as well.
SERVERS_UNDER_TEST = {
    "test.test_socketserver": (),
    "test.test_httpservers": (
        ("http.server", "HTTPServer", "TCPServer"),
        ("http.server", "ThreadingHTTPServer", "ThreadingMixIn"),
    ),
    "test.test_xmlrpc": (
        ("xmlrpc.server", "SimpleXMLRPCServer", "TCPServer"),
        ("xmlrpc.server", "MultiPathXMLRPCServer", "TCPServer"),
    ),
    "test.test_docxmlrpc": (("xmlrpc.server", "DocXMLRPCServer", "TCPServer"),),
    "test.test_wsgiref": (("wsgiref.simple_server", "WSGIServer", "TCPServer"),),
    "test.test_logging": (
        # logging.config imports the class itself, not the module.
        ("logging.config", "ThreadingTCPServer", "ThreadingTCPServer"),
        ("test.test_logging", "TestTCPServer", "ThreadingTCPServer"),
        ("test.test_logging", "TestUDPServer", "ThreadingUDPServer"),
        ("test.test_logging", "TestHTTPServer", "TCPServer"),
    ),
}


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


def _substitute(suite: str) -> tuple[object, list[str]]:
    """Import socketserver_rs and install it as ``socketserver`` with its
    ``patch()``, as a program would: the module, and problems if anything
    that must come after the patch was imported before it."""
    problems = [
        f"{name} was imported before socketserver_rs.patch()"
        for name in (suite, *BUILT_ON_SOCKETSERVER)
        if name in sys.modules
    ]
    import socketserver_rs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        socketserver_rs.patch()
    problems += [f"patch() warned: {w.category.__name__}: {w.message}" for w in caught]
    if sys.modules.get("socketserver") is not socketserver_rs:
        problems.append(f"after patch(), socketserver is {sys.modules.get('socketserver')!r}")
    return socketserver_rs, problems


def _derives(cls, base) -> bool:
    return isinstance(cls, type) and isinstance(base, type) and issubclass(cls, base)


def _check_servers(suite: str, suite_module, expected, label: str) -> tuple[list[str], list[str]]:
    """Check that the servers the suite tests are built on ``expected`` (the
    socketserver module in use): (checks passed, problems)."""
    checks: list[str] = []
    problems: list[str] = []

    used = getattr(suite_module, "socketserver", None)
    if used is not None:
        if used is expected:
            checks.append(f"{suite}.socketserver is {label}")
        else:
            problems.append(f"{suite}.socketserver is {used!r}, not {label}")

    for module_name, class_name, base_name in SERVERS_UNDER_TEST.get(suite, ()):
        what = f"{module_name}.{class_name}"
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{what}: cannot check: {exc!r}")
            continue
        base = getattr(expected, base_name, None)
        if _derives(cls, base):
            checks.append(f"{what} derives from {label}.{base_name}")
        else:
            problems.append(f"{what} does not derive from {label}.{base_name}: {cls.__mro__!r}")

    if suite == "test.test_logging":
        # logging.config.listen() makes its server class inside the call;
        # the thread it returns keeps it (and has not started it yet).
        import logging.config

        listener = logging.config.listen(0)
        rcvr = getattr(listener, "rcvr", None)
        base = getattr(expected, "ThreadingTCPServer", None)
        if _derives(rcvr, base):
            checks.append(
                f"logging.config.listen()'s server {rcvr.__qualname__} derives from "
                f"{label}.ThreadingTCPServer"
            )
        else:
            problems.append(
                f"logging.config.listen()'s server {rcvr!r} does not derive from "
                f"{label}.ThreadingTCPServer"
            )
    return checks, problems


def _select(suite: unittest.TestSuite, patterns: list[str]) -> unittest.TestSuite:
    """The tests of ``suite`` whose id matches one of ``patterns``, in order.
    A flat suite keeps class and module fixtures: unittest sets them up and
    tears them down as the test class or module changes."""

    def flatten(tests):
        for test in tests:
            if isinstance(test, unittest.TestSuite):
                yield from flatten(test)
            else:
                yield test

    regexes = [re.compile(p) for p in patterns]
    return unittest.TestSuite(t for t in flatten(suite) if any(r.search(t.id()) for r in regexes))


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
        "--suite",
        default=DEFAULT_SUITE,
        choices=sorted(SERVERS_UNDER_TEST),
        help=f"the test module to run (default {DEFAULT_SUITE})",
    )
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="REGEX",
        help="run only the tests whose id matches (re.search; repeatable)",
    )
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
    suite_name = args.suite

    summary: dict = {
        "mode": args.mode,
        "suite": suite_name,
        "select": args.select,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "checks": [],
        "check_problems": [],
        "harness_error": None,
        "tests_run": 0,
        "tests_in_suite": None,
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
        summary["elapsed"] = round(time.monotonic() - started, 3)
        sys.stdout.write(MARKER + json.dumps(summary, sort_keys=True) + "\n")
        sys.stdout.flush()
        return code

    started = time.monotonic()
    try:
        if args.mode == "substituted":
            expected, problems = _substitute(suite_name)
            label = "socketserver_rs"
            summary["check_problems"].extend(problems)
            summary["socketserver_rs_file"] = getattr(expected, "__file__", None)
            summary["socketserver_rs_version"] = expected._core.__version__
            problems = _check_origin(expected, args.expect_under, args.forbid_under)
            summary["checks"].append(
                "socketserver_rs origin: " + ", ".join(_module_files(expected))
            )
            summary["check_problems"].extend(problems)
            reply, fork_warnings = _fork_warnings(expected)
            if reply not in ("FORK", "no fork") or fork_warnings:
                summary["check_problems"].append(
                    f"ForkingTCPServer from a single-threaded process: reply {reply!r}, "
                    f"warnings {fork_warnings}"
                )
            else:
                summary["checks"].append(f"ForkingTCPServer forks without warnings ({reply})")
        else:
            import socketserver as expected

            label = "the standard socketserver"
            if expected.__name__ != "socketserver":
                summary["check_problems"].append(f"socketserver is {expected!r}")
        try:
            suite_module = importlib.import_module(suite_name)
        except unittest.SkipTest as exc:
            # test.support.requires() & co. raise at import time when the
            # interpreter lacks something the whole module needs.
            summary["module_skip"] = str(exc)
            return emit(0)

        summary["socketserver_file"] = getattr(sys.modules.get("socketserver"), "__file__", None)
        checks, problems = _check_servers(suite_name, suite_module, expected, label)
        summary["checks"].extend(checks)
        summary["check_problems"].extend(problems)
        if summary["check_problems"]:
            return emit(2)

        suite = unittest.defaultTestLoader.loadTestsFromModule(suite_module)
        summary["tests_in_suite"] = suite.countTestCases()
        if args.select:
            suite = _select(suite, args.select)
            if not suite.countTestCases():
                summary["check_problems"].append(f"no test of {suite_name} matches {args.select}")
                return emit(2)
        stream = io.StringIO() if args.verbosity < 0 else sys.stderr
        runner = unittest.TextTestRunner(
            stream=stream, verbosity=max(args.verbosity, 0), resultclass=_Result
        )
        result = runner.run(suite)

        # Re-check after the run: nothing inside the suite may have swapped
        # the module back.
        if sys.modules.get("socketserver") is not expected:
            summary["check_problems"].append(
                f"sys.modules['socketserver'] is no longer {label} after the run"
            )
        else:
            checks, problems = _check_servers(suite_name, suite_module, expected, label)
            summary["check_problems"].extend(f"after the run: {p}" for p in problems)
            if not problems:
                summary["checks"].append(f"still on {label} after the run")

        summary["tests_run"] = result.testsRun
        summary["failures"] = [{"id": t.id(), "traceback": tb} for t, tb in result.failures]
        summary["errors"] = [{"id": t.id(), "traceback": tb} for t, tb in result.errors]
        summary["skipped"] = [{"id": t.id(), "reason": r} for t, r in result.skipped]
        summary["expected_failures"] = [t.id() for t, _ in result.expectedFailures]
        summary["unexpected_successes"] = [t.id() for t in result.unexpectedSuccesses]
        summary["durations"] = result.durations
        if summary["check_problems"]:
            return emit(2)
        return emit(0 if result.wasSuccessful() else 1)
    except BaseException:  # report anything, including SystemExit from the suite
        summary["harness_error"] = traceback.format_exc()
        return emit(2)


if __name__ == "__main__":
    sys.exit(main())
