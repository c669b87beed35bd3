"""User programs type-check against socketserver_rs as against the standard module.

The programs are written the way the socketserver documentation's examples
are, annotated as `mypy --strict` asks. The shared ones are checked twice,
with `import socketserver` and with `import socketserver_rs as socketserver`,
under `mypy --strict` and under pyright's standard and strict rules
(basedpyright, which bundles pyright and the node it runs on); the ones that
use our extras only with ours. Their assert_type() lines make sure that what
the standard module's types name (rfile, wfile, server, server_address ...)
is not Any with ours, and each program also runs, so that what its types
claim holds.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import require
from test_docs import BLOCKS

SHARED = {}
OURS_ONLY = {}

SHARED["tcp_echo"] = '''
"""A threaded TCP echo server and its client."""

from __future__ import annotations

import socket
import socketserver
import threading
from io import BufferedIOBase
from typing import Optional

from typing_extensions import assert_type


class EchoHandler(socketserver.StreamRequestHandler):
    timeout = 5

    def setup(self) -> None:
        super().setup()
        self.lines = 0

    def handle(self) -> None:
        assert_type(self.rfile, BufferedIOBase)
        assert_type(self.wfile, BufferedIOBase)
        assert_type(self.server, socketserver.BaseServer)
        assert isinstance(self.rfile, BufferedIOBase)
        assert isinstance(self.wfile, BufferedIOBase)
        assert isinstance(self.server, EchoServer)
        first = self.rfile.readline()
        self.lines += 1
        self.wfile.write(first.upper())
        rest = self.rfile.read()
        assert_type(rest, bytes)
        self.wfile.write(rest)

    def finish(self) -> None:
        super().finish()
        if isinstance(self.server, EchoServer):
            self.server.handled.append(self.lines)


class EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    allowed_hosts = ("127.0.0.1",)

    def __init__(self, server_address: tuple[str, int]) -> None:
        super().__init__(server_address, EchoHandler)
        self.handled: list[int] = []

    def verify_request(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: tuple[str, int],
    ) -> bool:
        return client_address[0] in self.allowed_hosts

    def handle_error(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: tuple[str, int],
    ) -> None:
        super().handle_error(request, client_address)
        raise SystemExit(1)


def main() -> None:
    with EchoServer(("127.0.0.1", 0)) as server:
        assert_type(server, EchoServer)
        assert_type(server.socket, socket.socket)
        assert_type(server.timeout, Optional[float])
        port = server.server_address[1]
        assert_type(port, int)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(b"hello\\nworld")
                client.shutdown(socket.SHUT_WR)
                received = b""
                while True:
                    chunk = client.recv(1024)
                    if not chunk:
                        break
                    received += chunk
        finally:
            server.shutdown()
            thread.join()
    assert received == b"HELLO\\nworld", received
    assert server.handled == [1], server.handled


if __name__ == "__main__":
    main()
'''

SHARED["udp"] = '''
"""UDP servers, one on BaseRequestHandler and one on DatagramRequestHandler."""

from __future__ import annotations

import socket
import socketserver
import threading
from io import BufferedIOBase

from typing_extensions import assert_type


class UpperHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data.upper(), self.client_address)


class ReverseHandler(socketserver.DatagramRequestHandler):
    def handle(self) -> None:
        assert_type(self.packet, bytes)
        assert_type(self.socket, socket.socket)
        assert_type(self.rfile, BufferedIOBase)
        assert_type(self.wfile, BufferedIOBase)
        self.wfile.write(self.rfile.read()[::-1])


class SmallPacketServer(socketserver.ThreadingUDPServer):
    max_packet_size = 1024


def ask(
    server_class: type[socketserver.UDPServer],
    handler: type[socketserver.BaseRequestHandler],
    data: bytes,
) -> bytes:
    with server_class(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(5)
                client.sendto(data, ("127.0.0.1", server.server_address[1]))
                reply, _ = client.recvfrom(1024)
        finally:
            server.shutdown()
            thread.join()
    return reply


def main() -> None:
    assert ask(socketserver.UDPServer, UpperHandler, b"ping") == b"PING"
    assert ask(SmallPacketServer, ReverseHandler, b"ping") == b"gnip"


if __name__ == "__main__":
    main()
'''

SHARED["forking_and_unix"] = '''
"""A forking TCP server, and a threaded server on a Unix socket."""

from __future__ import annotations

import os
import socket
import socketserver
import tempfile
import threading
from typing import Optional

from typing_extensions import assert_type


class PidHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data: bytes = self.request.recv(1024)
        self.request.sendall(b"%d:%s" % (os.getpid(), data))


class ForkingServer(socketserver.ForkingMixIn, socketserver.TCPServer):
    max_children = 4


class LineHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


def forked() -> None:
    with ForkingServer(("127.0.0.1", 0), PidHandler) as server:
        assert_type(server.active_children, Optional[set[int]])
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"ping")
            server.handle_request()
            reply = client.recv(1024)
        server.collect_children(blocking=True)
    pid, _, data = reply.partition(b":")
    assert data == b"ping" and int(pid) != os.getpid(), reply
    assert issubclass(socketserver.ForkingTCPServer, socketserver.ForkingMixIn)


def unix() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "server.sock")
        with socketserver.ThreadingUnixStreamServer(path, LineHandler) as server:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
            thread.start()
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    client.settimeout(5)
                    client.connect(server.server_address)
                    client.sendall(b"ping\\n")
                    reply = client.recv(1024)
            finally:
                server.shutdown()
                thread.join()
    assert reply == b"PING\\n", reply


def main() -> None:
    forked()
    unix()


if __name__ == "__main__":
    main()
'''

OURS_ONLY["messages"] = '''
"""Length-prefixed messages: MessageRequestHandler servers, their clients, recv_exactly."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Optional

from typing_extensions import assert_type

import socketserver_rs as socketserver
from socketserver_rs.messages import DEFAULT_MAX_MESSAGE_SIZE


class UpperHandler(socketserver.MessageRequestHandler):
    max_message_size = 1024

    def handle_message(self, message: bytes) -> bytes | None:
        if message == b"quiet":
            return None
        return message.upper()


class CountingHandler(socketserver.MessageRequestHandler):
    def handle(self) -> None:
        first = self.read_message()
        assert_type(first, Optional[bytes])
        messages = self.messages()
        assert_type(messages, Iterator[bytes])
        count = (first is not None) + sum(1 for _ in messages)
        sent = self.write_message(b"%d" % count)
        assert_type(sent, int)


def exchange(handler: type[socketserver.MessageRequestHandler], *messages: bytes) -> list[bytes]:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        replies: list[bytes] = []
        try:
            port = server.server_address[1]
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                for message in messages:
                    sent = socketserver.send_message(client, message)
                    assert_type(sent, int)
                socketserver.send_message(client, bytearray(b"end"))
                client.shutdown(socket.SHUT_WR)
                while True:
                    reply = socketserver.recv_message(client, max_size=DEFAULT_MAX_MESSAGE_SIZE)
                    assert_type(reply, Optional[bytes])
                    if reply is None:
                        break
                    replies.append(reply)
        finally:
            server.shutdown()
            thread.join()
    return replies


class SmallClient(socketserver.MessageClient):
    max_message_size = 1024


def with_client() -> list[bytes]:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), UpperHandler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        try:
            address = ("127.0.0.1", server.server_address[1])
            with SmallClient(address, timeout=5, max_message_size=100) as client:
                assert_type(client, SmallClient)
                assert_type(client.socket, socket.socket)
                reply = client.request(b"hello")
                assert_type(reply, bytes)
                sent = client.send_message(bytearray(b"again"))
                assert_type(sent, int)
                again = client.recv_message()
                assert_type(again, Optional[bytes])
                assert again is not None
            client.close()
        finally:
            server.shutdown()
            thread.join()
    return [reply, again]


def exactly() -> bytes:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"abcd")
        got = socketserver.recv_exactly(b, 4)
        assert_type(got, bytes)
    return got


def main() -> None:
    assert DEFAULT_MAX_MESSAGE_SIZE == socketserver.MessageRequestHandler.max_message_size
    assert exchange(UpperHandler, b"hello", b"quiet", b"") == [b"HELLO", b"", b"END"]
    assert exchange(CountingHandler, b"a", b"b") == [b"3"]
    assert with_client() == [b"HELLO", b"AGAIN"]
    assert exactly() == b"abcd"


if __name__ == "__main__":
    main()
'''

OURS_ONLY["patch"] = '''
"""patch() before http.server: the standard library's servers run on the core."""

from __future__ import annotations

import http.client
import sys
import threading
from typing import Any

import socketserver_rs

socketserver_rs.patch()

import http.server  # noqa: E402 -- after patch(), as documented


class HelloHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    assert sys.modules["socketserver"] is socketserver_rs
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), HelloHandler) as server:
        assert isinstance(server, socketserver_rs.ThreadingMixIn)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
            connection.request("GET", "/")
            body = connection.getresponse().read()
            connection.close()
        finally:
            server.shutdown()
            thread.join()
    assert body == b"hello", body


if __name__ == "__main__":
    main()
'''

OURS_ONLY["extras"] = '''
"""What the standard module lacks: a bounded, self-trimming worker pool."""

from __future__ import annotations

import socket
import threading
from typing import Optional

from typing_extensions import assert_type

import socketserver_rs as socketserver


class LineHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


class BoundedServer(socketserver.ThreadingTCPServer):
    max_threads = 4
    idle_thread_timeout = 0.5


def main() -> None:
    assert_type(socketserver.__version__, str)
    with BoundedServer(("127.0.0.1", 0), LineHandler) as server:
        pool: socketserver.ThreadingMixIn = server
        assert_type(pool.max_threads, Optional[int])
        assert_type(pool.idle_thread_timeout, float)
        pool.max_threads = None
        server.max_threads = 2
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        try:
            port = server.server_address[1]
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(b"ping\\n")
                reply = client.recv(1024)
        finally:
            server.shutdown()
            thread.join()
    assert reply == b"ping\\n", reply


if __name__ == "__main__":
    main()
'''

MODULES = ["socketserver", "socketserver_rs"]
IMPORT_OURS = "import socketserver_rs as socketserver"


def programs(module):
    """The programs for `module`, by file name, importing it as socketserver."""
    sources = dict(SHARED)
    if module == "socketserver_rs":
        sources.update(OURS_ONLY)
    found = {}
    for name, source in sources.items():
        source = textwrap.dedent(source).lstrip()
        if module == "socketserver_rs" and name in SHARED:
            assert "\nimport socketserver\n" in source, name
            source = source.replace("\nimport socketserver\n", f"\n{IMPORT_OURS}\n")
        found[f"{name}.py"] = source
    return found


def write_programs(module, directory):
    for name, source in programs(module).items():
        (directory / name).write_text(source)
    return sorted(programs(module))


def write_doc_blocks(directory):
    """Every Python block of README.md and docs/*.md, run or not, as a file."""
    names = []
    for block in BLOCKS:
        name = f"{block.page.stem.replace('-', '_')}_line{block.line}.py".lower()
        (directory / name).write_text(block.code)
        names.append(name)
    return names


def checker_output(result):
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("module", MODULES)
def test_mypy_strict(module, tmp_path):
    run_mypy(write_programs(module, tmp_path), tmp_path)


def test_mypy_strict_on_the_docs(tmp_path):
    run_mypy(write_doc_blocks(tmp_path), tmp_path)


def run_mypy(files, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, checker_output(result)
    assert result.stdout == "", checker_output(result)


def basedpyright():
    beside = Path(sys.executable).parent / "basedpyright"
    return str(beside) if beside.exists() else shutil.which("basedpyright")


@pytest.mark.parametrize("mode", ["standard", "strict"])
@pytest.mark.parametrize("module", MODULES)
def test_pyright(module, mode, tmp_path):
    run_pyright(write_programs(module, tmp_path), mode, tmp_path)


@pytest.mark.parametrize("mode", ["standard", "strict"])
def test_pyright_on_the_docs(mode, tmp_path):
    # A few blocks show an import line and nothing else: strict's unused
    # import rule is about programs, not those.
    rules = {"reportUnusedImport": False}
    run_pyright(write_doc_blocks(tmp_path), mode, tmp_path, rules)


def run_pyright(files, mode, tmp_path, rules=None):
    command = basedpyright()
    require(command, "basedpyright is not installed (pip install '.[test]')")
    # Pyright's own rules, its default and its strict ones, not basedpyright's
    # (files named on the command line would make it ignore this configuration).
    # Pyright itself assumes the platform it runs on; basedpyright, all of them.
    config = {"include": files, "typeCheckingMode": mode, "pythonPlatform": "Linux"}
    config.update(rules or {})
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    options = ["--outputjson", "--project", "pyrightconfig.json", "--pythonpath", sys.executable]
    result = subprocess.run(
        [command, *options],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(checker_output(result))
    errors = [
        f"{Path(d['file']).name}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    ]
    assert errors == [], "\n".join(errors)
    assert report["summary"]["filesAnalyzed"] == len(files)


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module in MODULES for name in programs(module)],
)
def test_program_runs(module, name, tmp_path):
    path = tmp_path / name
    path.write_text(programs(module)[name])
    env = dict(os.environ, PYTHONWARNINGS="error")
    result = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
