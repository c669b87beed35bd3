"""The programs of examples/ run and print what they promise (the blocks of
the README and docs/ run in test_docs.py)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

# What each example must print: a string, or lines that must all appear.
EXPECTED = {
    "tcp_echo.py": "b'hello\\n'",
    "udp_upper.py": "(b'PING', ('127.0.0.1', ",
    "framed_messages.py": "b'HELLO'\n0 b''\n200000 b'BIG BIG BIG '",
    "tutorial_tcp.py": (
        "connect_ex to a port nobody listens on: ECONNREFUSED\n"
        "client 127.0.0.1 -> server 127.0.0.1\n"
        "connected to the bound port: True\n"
        "non-blocking recv with nothing to read: BlockingIOError\n"
        "server received b'hello, server'\n"
        "client received b'HELLO, SERVER'\n"
        "socketserver_rs replied b'HELLO AGAIN'\n"
    ),
    "tutorial_udp.py": (
        "server got b'first' from the client's port: True\n"
        "server got b'second' from the client's port: True\n"
        "client got b'FIRST' and b'SECOND'\n"
        "UDPServer replied b'5 bytes: HELLO'\n"
        "a 10000-byte datagram: b'8192 bytes: XXXXX'\n"
        "with max_packet_size = 65507: b'10000 bytes: XXXXX'\n"
    ),
    "chat_server.py": (
        "alice hears  * alice joined\n"
        "alice hears  * bob joined\n"
        "  bob hears  * bob joined\n"
        "alice hears  * carol joined\n"
        "  bob hears  * carol joined\n"
        "carol hears  * carol joined\n"
        "alice hears  alice: hello, everyone\n"
        "  bob hears  alice: hello, everyone\n"
        "carol hears  alice: hello, everyone\n"
        "alice hears  bob: hi alice\n"
        "  bob hears  bob: hi alice\n"
        "carol hears  bob: hi alice\n"
        "alice hears  * carol left\n"
        "  bob hears  * carol left\n"
        "connected: 2\n"
    ),
    "file_upload.py": (
        "upload notes.txt -> {'ok': True, 'name': 'notes.txt', 'size': 18}\n"
        "upload photo.raw -> {'ok': True, 'name': 'photo.raw', 'size': 5242880}\n"
        "upload empty.bin -> {'ok': True, 'name': 'empty.bin', 'size': 0}\n"
        "upload ../escape.txt -> {'ok': False, 'error': \"'..' is refused\"}\n"
        "upload /etc/motd -> {'ok': False, 'error': 'absolute paths are refused'}\n"
        "server: interrupted cut.bin 300000 of 1000000 bytes\n"
        "in the upload folder: ['empty.bin', 'notes.txt', 'photo.raw']\n"
        "escaped: False\n"
        "contents intact: True\n"
    ),
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
