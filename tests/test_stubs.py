"""The stubs of the Rust module match the built binary; the package type-checks."""

import subprocess
import sys


def test_stubs_match_the_binary():
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "socketserver_rs._core"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_package_type_checks():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=__import__("pathlib").Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
