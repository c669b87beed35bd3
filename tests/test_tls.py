"""TLS on a threading server: the handshake runs on the request's worker.

A server whose listening socket is wrapped with SSLContext.wrap_socket()
does each handshake inside accept() with the standard module, on the
serving thread, so one silent client stops every other client. Ours
accepts without it and completes it on the worker, within
handshake_timeout (see _tls.py); `python -m socketserver_rs http` with
--tls-cert (3.14+) runs on that.
"""

import logging
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import IO_TIMEOUT, still_open, wait_until

import socketserver_rs

DATA = Path(__file__).resolve().parent / "data"
CERT, KEY = DATA / "localhost.crt", DATA / "localhost.key"


def server_context():
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT, KEY)
    return context


def client_context():
    return ssl.create_default_context(cafile=str(CERT))


def tls_echo_server(mod, **attributes):
    class Echo(mod.StreamRequestHandler):
        def handle(self):
            request = self.request
            self.server.requests.append((type(request), request.version(), request.server_side))
            self.wfile.write(self.rfile.readline().upper())

    class Server(mod.ThreadingTCPServer):
        daemon_threads = True
        errors = []

        def handle_error(self, request, client_address):
            self.errors.append(sys.exc_info()[0])

    for name, value in attributes.items():
        setattr(Server, name, value)
    server = Server(("127.0.0.1", 0), Echo)
    server.requests = []
    server.socket = server_context().wrap_socket(server.socket, server_side=True)
    return server


def tls_request(address, line=b"hello\n", timeout=IO_TIMEOUT):
    with socket.create_connection(address, timeout=timeout) as raw:
        with client_context().wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(line)
            return conn.recv(64)


@pytest.fixture
def serving():
    started = []

    def serve(server):
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread))
        return server

    yield serve
    for server, thread in started:
        server.shutdown()
        thread.join(IO_TIMEOUT)
        server.server_close()


def test_silent_clients_do_not_stop_a_tls_server(serving):
    server = serving(tls_echo_server(socketserver_rs))
    silent = [socket.create_connection(server.server_address) for _ in range(50)]
    try:
        assert tls_request(server.server_address) == b"HELLO\n"
        # What the handler had: an SSLSocket whose handshake is done.
        kind, version, server_side = server.requests[0]
        assert issubclass(kind, ssl.SSLSocket)
        assert version is not None and version.startswith("TLS")
        assert server_side
    finally:
        for sock in silent:
            sock.close()
    assert server.errors == []


def test_silent_clients_hold_no_worker_of_a_bounded_pool(serving):
    # Twice as many silent clients as workers: all are accepted and wait
    # for their handshake off the pool, and a good client is served while
    # they still wait.
    server = serving(tls_echo_server(socketserver_rs, max_threads=8, handshake_timeout=60))
    silent = [socket.create_connection(server.server_address) for _ in range(16)]
    try:
        assert wait_until(lambda: server.stats()["requests_active"] == 16)
        assert tls_request(server.server_address) == b"HELLO\n"
        assert all(still_open(sock) for sock in silent)
        server.server_close()
        # Closing the server closes the connections still waiting.
        for sock in silent:
            sock.settimeout(IO_TIMEOUT)
            assert sock.recv(1) == b""
    finally:
        for sock in silent:
            sock.close()
    assert server.errors == []


def test_the_standard_module_stalls_on_a_silent_client(serving):
    """What the test above guards against, shown on the standard module."""
    server = serving(tls_echo_server(socketserver))
    silent = socket.create_connection(server.server_address)
    try:
        with pytest.raises(socket.timeout):
            tls_request(server.server_address, timeout=1.0)
    finally:
        silent.close()


def test_a_silent_handshake_is_cut_at_handshake_timeout(serving):
    server = serving(tls_echo_server(socketserver_rs, handshake_timeout=0.2))
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as silent:
        assert silent.recv(1) == b""  # closed by the server, not by our timeout
    assert tls_request(server.server_address) == b"HELLO\n"
    assert server.errors == []


def test_a_failed_handshake_costs_that_connection_quietly(serving, capfd, caplog):
    caplog.set_level(logging.INFO, logger="socketserver_rs")
    server = serving(tls_echo_server(socketserver_rs))
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as plain:
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS
        assert plain.recv(64) == b""
    assert tls_request(server.server_address) == b"HELLO\n"
    assert server.errors == []
    assert capfd.readouterr().err == ""
    handshake_lines = [r for r in caplog.records if "TLS handshake with" in r.getMessage()]
    assert len(handshake_lines) == 1


# ---------------------------------------------------------------------------
# `http --tls-cert` (the option exists from 3.14 on)


def newer_pythons():
    """Interpreters 3.14+ with this package installed: the running one, or
    the venvs the CPython suite test builds."""
    if sys.version_info >= (3, 14):
        return [sys.executable]
    from test_cpython_suite import INTERPRETERS, prepare_venv

    return [
        str(prepare_venv(minor, exe)) for (_, minor), exe in INTERPRETERS.items() if minor >= 14
    ]


def start_https(python, module_args, site):
    args = [
        *module_args,
        "0",
        "-b",
        "127.0.0.1",
        "-d",
        str(site),
        "--tls-cert",
        str(CERT),
        "--tls-key",
        str(KEY),
    ]
    proc = subprocess.Popen(
        [python, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"},
    )
    line = proc.stdout.readline()
    match = re.search(r"port (\d+)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, int(match.group(1))


def https_get(port, path, timeout=IO_TIMEOUT):
    """(status, body) by an ssl-verified Python client and by curl."""
    import http.client

    conn = http.client.HTTPSConnection("localhost", port, context=client_context(), timeout=timeout)
    conn.request("GET", path)
    response = conn.getresponse()
    python_client = (response.status, response.read())
    conn.close()
    curl = subprocess.run(
        [
            "curl",
            "-s",
            "--cacert",
            str(CERT),
            "-w",
            "%{http_code}",
            f"https://localhost:{port}{path}",
        ],
        capture_output=True,
        timeout=timeout,
    )
    return python_client, (int(curl.stdout[-3:]), curl.stdout[:-3])


@pytest.mark.slow
def test_http_over_tls_matches_http_server_and_survives_silent_clients(tmp_path):
    from conftest import require

    pythons = newer_pythons()
    require(pythons, "no CPython 3.14 or newer with socketserver_rs installed")
    require(shutil.which("curl"), "curl is not installed (apt-get install -y curl)")
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "a.txt").write_bytes(b"alpha\n")
    (site / "sub" / "b.txt").write_bytes(b"beta\n" * 100)
    paths = ["/a.txt", "/sub/b.txt", "/", "/missing"]
    for python in pythons:
        theirs, their_port = start_https(python, ["-m", "http.server"], site)
        ours, our_port = start_https(python, ["-m", "socketserver_rs", "http"], site)
        try:
            expected = [https_get(their_port, path) for path in paths]
            silent = [socket.create_connection(("127.0.0.1", our_port)) for _ in range(10)]
            try:
                got = [https_get(our_port, path) for path in paths]
            finally:
                for sock in silent:
                    sock.close()
            assert got == expected, python
            assert expected[0][0] == (200, b"alpha\n")
        finally:
            for proc in (ours, theirs):
                proc.terminate()
                proc.communicate(timeout=IO_TIMEOUT)


def test_ssl_context_wraps_the_server_and_serves_verified_clients(serving):
    class Echo(socketserver_rs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline().upper())

    class Server(socketserver_rs.ThreadingTCPServer):
        daemon_threads = True

    server = serving(Server(("127.0.0.1", 0), Echo, ssl_context=server_context()))
    assert isinstance(server.socket, ssl.SSLSocket)
    silent = socket.create_connection(server.server_address)
    try:
        assert tls_request(server.server_address, b"over tls\n") == b"OVER TLS\n"
    finally:
        silent.close()


def test_ssl_context_as_a_class_attribute(serving):
    class Echo(socketserver_rs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline()[::-1])

    class Server(socketserver_rs.ThreadingTCPServer):
        daemon_threads = True
        ssl_context = server_context()

    server = serving(Server(("127.0.0.1", 0), Echo))
    assert tls_request(server.server_address, b"abc\n") == b"\ncba"
