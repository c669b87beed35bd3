"""Run part of the test suite (and the core's unit tests) under valgrind's
memcheck and fail on any memory error raised inside the Rust core.

CPython itself is not built for valgrind, so its own reports (reads of
uninitialised memory in its integer cache, say) are set aside: an error
counts when one of its innermost frames is in the core's shared library.

    python bench/memcheck.py                       # the short form run by the suite
    python bench/memcheck.py tests/test_servers.py # any pytest arguments
"""

import argparse
import glob
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHORT_FORM = ["tests/test_stream_io.py", "-k", "not signal"]
INNERMOST = 3  # frames of an error's stack searched for the core


def core_errors(xml_path):
    """The errors of a memcheck XML report whose innermost frames are in
    the core, as printable strings."""
    found = []
    for error in ET.parse(xml_path).getroot().iter("error"):
        stack = error.find("stack")
        frames = stack.findall("frame")[:INNERMOST] if stack is not None else []
        if (error.findtext("kind") or "").startswith("Leak_"):
            continue  # leaks at exit: the interpreter never frees everything
        if any("_core" in (frame.findtext("obj") or "") for frame in frames):
            what = error.findtext("kind"), error.findtext("what") or error.findtext("xwhat/text")
            where = [
                f"{frame.findtext('fn')} ({frame.findtext('file')}:{frame.findtext('line')})"
                for frame in frames
            ]
            found.append(f"{what[0]}: {what[1]}\n    " + "\n    ".join(where))
    return found


def memcheck(command, env=None):
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = os.path.join(tmp, "memcheck.xml")
        valgrind = [
            "valgrind",
            "--tool=memcheck",
            "--leak-check=no",
            "--xml=yes",
            f"--xml-file={xml_path}",
        ]
        result = subprocess.run(valgrind + command, cwd=ROOT, env=env, timeout=1800)
        return result.returncode, core_errors(xml_path)


def unit_test_binary():
    """Build the core's unit tests and return the test executable."""
    build = subprocess.run(
        ["cargo", "test", "--no-run", "--message-format=short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if build.returncode != 0:
        sys.exit(build.stderr)
    candidates = [
        path
        for path in glob.glob(str(ROOT / "target/debug/deps/_core-*"))
        if os.access(path, os.X_OK) and not path.endswith((".so", ".d", ".rlib"))
    ]
    return max(candidates, key=os.path.getmtime)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pytest_args", nargs="*", help="what pytest runs under valgrind")
    parser.add_argument("--no-unit-tests", action="store_true", help="skip cargo test")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")

    failures = []
    if not args.no_unit_tests:
        status, errors = memcheck([unit_test_binary()])
        print(f"core unit tests under memcheck: exit {status}, {len(errors)} core errors")
        if status != 0 or errors:
            failures.append(("cargo test", status, errors))

    # The system allocator, so that memcheck sees each block; a free-threaded
    # build has none but mimalloc (which memcheck follows through its mmaps).
    free_threaded = sysconfig.get_config_var("Py_GIL_DISABLED")
    env = dict(os.environ, PYTHONMALLOC="mimalloc" if free_threaded else "malloc")
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    status, errors = memcheck(pytest + (args.pytest_args or SHORT_FORM), env)
    print(f"pytest under memcheck: exit {status}, {len(errors)} core errors")
    if status != 0 or errors:
        failures.append(("pytest", status, errors))

    for what, status, errors in failures:
        print(f"\n{what}: exit status {status}")
        for error in errors:
            print(error)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
