"""The command line: `python -m socketserver_rs {echo,http,run}`.

`http` is compared with `python -m http.server` of the same interpreter,
response by response; `run` runs unmodified programs built on the standard
library's servers and passes their exit status through.
"""

import errno
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import IO_TIMEOUT

CLI = [sys.executable, "-m", "socketserver_rs"]


def cli(*args, **kwargs):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, **kwargs)


# ---------------------------------------------------------------------------
# The command line itself


def test_help_lists_each_subcommand_with_a_line():
    proc = cli("--help")
    assert proc.returncode == 0
    for command in ("echo", "http", "run"):
        assert re.search(rf"^\s+{command}\s+\S", proc.stdout, re.M), proc.stdout


def test_version():
    import importlib.metadata

    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"socketserver_rs {importlib.metadata.version('socketserver_rs')}"


@pytest.mark.parametrize("command", ["echo", "http"])
@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_bad_port_is_a_usage_error(command, port):
    proc = cli(command, port)
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr
    assert "port must be 0-65535" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_http_has_the_options_of_http_server():
    def options(text):
        listed = re.split(r"^(?:options|optional arguments):$", text, flags=re.M)[1]
        return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", listed))

    ours = cli("http", "--help")
    theirs = subprocess.run(
        [sys.executable, "-m", "http.server", "--help"], capture_output=True, text=True
    )
    assert ours.returncode == theirs.returncode == 0
    assert options(ours.stdout) == options(theirs.stdout)
    assert "python -m socketserver_rs http" in ours.stdout


def start(args, cwd=None):
    """A server process that prints where it listens; (process, port)."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C works in the server even when these tests run with SIGINT
        # ignored (nohup, a background job), which a child would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    line = proc.stdout.readline()
    match = re.search(r"port (\d+)|:(\d+) ", line)
    if not match:
        proc.kill()
        pytest.fail(f"no port in {line!r}: {proc.communicate(timeout=10)}")
    return proc, int(match.group(1) or match.group(2))


def stop(proc):
    proc.terminate()
    proc.communicate(timeout=10)


def test_echo_serves_on_its_short_bind_option():
    proc, port = start([*CLI, "echo", "-b", "127.0.0.1", "0"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as client:
            client.sendall(b"ping\n")
            assert client.recv(16) == b"ping\n"
    finally:
        stop(proc)


# ---------------------------------------------------------------------------
# http against http.server

REQUESTS = [
    ("GET", "/a.txt", {}),
    ("GET", "/sub/b.txt", {}),
    ("GET", "/", {}),
    ("GET", "/sub", {}),
    ("GET", "/sub/", {}),
    ("GET", "/missing", {}),
    ("HEAD", "/a.txt", {}),
    ("GET", "/a.txt", {"Range": "bytes=0-1"}),
    ("GET", "/../../../../etc/passwd", {}),
    ("GET", "/with%20space.txt", {}),
    ("GET", "/%C3%A9t%C3%A9.txt", {}),
    ("POST", "/a.txt", {"Content-Length": "0"}),
]


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.txt").write_bytes(b"beta\n" * 1000)
    (root / "with space.txt").write_bytes(b"space\n")
    (root / "été.txt").write_text("summer\n", encoding="utf-8")
    return root


def responses(port, protocol_version):
    """Each request's status, headers but Server and Date, and body; over
    one connection when the server keeps it alive."""
    seen = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
    try:
        for method, path, headers in REQUESTS:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            kept = sorted((k, v) for k, v in response.getheaders() if k not in ("Server", "Date"))
            seen.append((method, path, response.status, kept, body))
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
    finally:
        conn.close()
    return seen


@pytest.mark.parametrize("protocol", ["HTTP/1.0", "HTTP/1.1"])
def test_http_answers_as_http_server(site, protocol):
    args = ["0", "-b", "127.0.0.1", "-d", str(site), "-p", protocol]
    ours, our_port = start([*CLI, "http", *args])
    theirs, their_port = start([sys.executable, "-m", "http.server", *args])
    try:
        assert responses(our_port, protocol) == responses(their_port, protocol)
    finally:
        stop(ours)
        stop(theirs)


# ---------------------------------------------------------------------------
# run: unmodified programs

XMLRPC_SERVER = """
import sys
from xmlrpc.server import SimpleXMLRPCServer
import socketserver

with SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False) as server:
    server.register_function(lambda a, b: a + b, "add")
    server.register_function(lambda: sys.argv[1:], "argv")
    print("socketserver is", socketserver.__name__, "port", server.server_address[1], flush=True)
    server.handle_request()
    server.handle_request()
sys.exit(int(sys.argv[1]))
"""

WSGI_SERVER = """
import sys
from wsgiref.simple_server import make_server, WSGIRequestHandler

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%s %s" % (__name__, sys.path[0])).encode()]

with make_server("127.0.0.1", 0, app, handler_class=Quiet) as server:
    print("wsgi on port", server.server_address[1], flush=True)
    server.handle_request()
"""


def test_run_script_xmlrpc_server_and_its_exit_status(tmp_path):
    script = tmp_path / "rpc.py"
    script.write_text(textwrap.dedent(XMLRPC_SERVER))
    proc, port = start([*CLI, "run", str(script), "3", "--flag"])
    try:
        import xmlrpc.client

        rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/")
        assert rpc.add(2, 3) == 5
        assert rpc.argv() == ["3", "--flag"]
        out, err = proc.communicate(timeout=IO_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err


def test_run_reports_the_patched_module_and_script_dir(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(WSGI_SERVER))
    proc, port = start([*CLI, "run", str(script)], cwd=str(Path.home()))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
        conn.request("GET", "/")
        body = conn.getresponse().read().decode()
        conn.close()
        proc.communicate(timeout=IO_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert body == f"__main__ {tmp_path}"
    assert proc.returncode == 0


def test_run_module(tmp_path):
    (tmp_path / "pkgmain.py").write_text(
        "import sys, socketserver\n"
        "print(__name__, socketserver.__name__, sys.argv[1:])\n"
        "sys.exit(5)\n"
    )
    proc = cli("run", "-m", "pkgmain", "x", "-y", cwd=str(tmp_path))
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout.strip() == "__main__ socketserver_rs ['x', '-y']"


def test_run_without_a_program_is_a_usage_error():
    proc = cli("run")
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_run_passes_a_failure_through(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("raise RuntimeError('boom')\n")
    proc = cli("run", str(script))
    assert proc.returncode == 1
    assert "RuntimeError: boom" in proc.stderr


def test_http_stops_on_sigint(site):
    proc, port = start([*CLI, "http", "0", "-b", "127.0.0.1", "-d", str(site)])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
    conn.request("GET", "/a.txt")
    assert conn.getresponse().read() == b"alpha\n"
    conn.close()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=IO_TIMEOUT)
    assert proc.returncode == 0, err
    assert "Keyboard interrupt received" in out


@pytest.mark.parametrize("command", ["echo", "http"])
def test_a_port_in_use_is_one_line_and_a_failure(command):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        proc = cli(command, "-b", "127.0.0.1", port)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"cannot listen on 127.0.0.1 port {port}: [Errno {errno.EADDRINUSE}] "
        f"{os.strerror(errno.EADDRINUSE)}"
    ]
