"""The core runs clean under valgrind's memcheck (the short form of
bench/memcheck.py: the core's unit tests and the stream I/O suite)."""

import pathlib
import shutil
import subprocess
import sys

import pytest
from conftest import require

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_no_memory_errors_in_the_core():
    require(
        shutil.which("valgrind"), "valgrind is not installed (Debian: apt-get install -y valgrind)"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "memcheck.py")],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert "pytest under memcheck: exit 0, 0 core errors" in result.stdout
    assert "core unit tests under memcheck: exit 0, 0 core errors" in result.stdout
