"""Every Python block of README.md and docs/*.md runs as written, in a fresh
interpreter, and stops by itself. A block that must not run is preceded by
a `<!-- not run: reason -->` line. tests/test_typing.py type-checks them."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!-- not run: (.*?) -->\n$")
ANY_MARKER = re.compile(r"^<!-- not run\b", re.M)


class Block:
    def __init__(self, page, line, code, not_run):
        self.page = page
        self.line = line
        self.code = code
        self.not_run = not_run  # the reason, or None

    def __repr__(self):
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page):
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        marker = NOT_RUN.search(before[-300:])
        line = before.count("\n") + 1
        found.append(Block(page, line, match.group(1), marker and marker.group(1)))
    return found


BLOCKS = [block for page in PAGES for block in blocks(page)]
RUNNABLE = [block for block in BLOCKS if block.not_run is None]


def test_every_page_is_found():
    names = {page.name for page in PAGES}
    assert names >= {
        "README.md",
        "differences.md",
        "messages.md",
        "deployment.md",
        "command-line.md",
        "performance.md",
        "architecture.md",
        "contributing.md",
    }
    assert len(RUNNABLE) >= 8


def test_each_marker_precedes_a_block_and_gives_a_reason():
    markers = sum(len(ANY_MARKER.findall(page.read_text())) for page in PAGES)
    reasons = [block.not_run for block in BLOCKS if block.not_run is not None]
    assert len(reasons) == markers, "a not-run marker that is not right above a python block"
    assert all(len(reason.split()) >= 3 for reason in reasons), reasons


@pytest.mark.parametrize("block", RUNNABLE, ids=repr)
def test_block_runs(block):
    # Servers in the docs' programs listen on loopback, and stop by themselves.
    assert '"0.0.0.0"' not in block.code and '"::"' not in block.code, "not loopback"
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", block.code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
