"""The README's programs and examples/ run and print what they promise."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

EXPECTED = {
    "tcp_echo.py": "b'hello\\n'",
    "udp_upper.py": "(b'PING', ('127.0.0.1', ",
    "framed_messages.py": "5 b'HELLO'\n0 b''\n200000 b'BIG BIG BIG '",
}


def run(code):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_examples_exist():
    assert {path.name for path in EXAMPLES} >= set(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path):
    result = run(path.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert EXPECTED[path.name] in result.stdout


def test_readme_programs_are_the_examples():
    # The README shows the examples verbatim, so running those runs these.
    example_code = [path.read_text() for path in EXAMPLES]
    runnable = [block for block in README_BLOCKS if "serve_forever" in block]
    assert runnable, "no runnable program found in the README"
    for block in runnable:
        assert any(block in code for code in example_code), block[:80]
