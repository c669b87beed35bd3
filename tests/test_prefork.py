"""Pre-forked workers (prefork.serve_prefork): the master in a subprocess of
its own session, driven by signals as gunicorn's is. Each test kills what
is left of that session when it ends."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import IO_TIMEOUT, KeepAlive, wait_until

import socketserver_rs
from socketserver_rs.prefork import serve_prefork

# The handler says which worker it runs on, waits for "go" (or the client
# closing), sleeps 0.2 s after "go", and says "done". It waits with read(3),
# mid-request: a handler waiting for a line is idle, and closed at SIGTERM.
SERVER = textwrap.dedent(
    """
    import os, sys, time
    import socketserver_rs
    from socketserver_rs.prefork import serve_prefork

    class Slow(socketserver_rs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(b"%d\\n" % os.getpid())
            self.wfile.flush()
            if self.rfile.read(3) == b"go\\n":
                time.sleep(0.2)
                self.wfile.write(b"done\\n")

    workers, port = int(sys.argv[1]), int(sys.argv[2])
    if port:
        class Server(socketserver_rs.ThreadingTCPServer):
            allow_reuse_port = True
        server = lambda: Server(("127.0.0.1", port), Slow)
    else:
        server = socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Slow)
        port = server.server_address[1]
    print(port, flush=True)
    sys.exit(serve_prefork(server, workers=workers, graceful_timeout=20))
    """
)


# An HTTP/1.1 echo server (see conftest.KeepAlive), on http.server under
# patch(): the stock ThreadingHTTPServer (daemon threads), or one of
# non-daemon threads as older programs build it.
HTTP_SERVER = textwrap.dedent(
    """
    import sys
    import socketserver_rs

    socketserver_rs.patch()
    import http.server
    import socketserver
    from socketserver_rs.prefork import serve_prefork

    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class ThreadedHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
        pass

    workers, cls = int(sys.argv[1]), getattr(http.server, sys.argv[3], ThreadedHTTPServer)
    server = cls(("127.0.0.1", 0), Echo)
    print(server.server_address[1], flush=True)
    sys.exit(serve_prefork(server, workers=workers, graceful_timeout=30))
    """
)


class Master:
    def __init__(self, workers, port=0, script=SERVER, args=()):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(workers), str(port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.address = ("127.0.0.1", int(self.proc.stdout.readline()))

    def workers(self):
        """The pids of the master's live children."""
        pids = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                pids.add(int(entry))
        return pids

    def wait_for_workers(self, count):
        assert wait_until(lambda: len(self.workers()) == count), self.workers()
        return self.workers()

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def connect(self):
        """A connection whose handler has started; (socket, worker pid)."""
        client = socket.create_connection(self.address, timeout=IO_TIMEOUT)
        reader = client.makefile("rb")
        return client, reader, int(reader.readline())

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def master():
    started = []

    def start(workers, port=0, script=SERVER, args=()):
        started.append(Master(workers, port, script, args))
        return started[-1]

    yield start
    for m in started:
        m.kill()


def refused(address):
    try:
        socket.create_connection(address, timeout=IO_TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_in_flight_requests(master):
    m = master(2)
    m.wait_for_workers(2)
    clients = [m.connect() for _ in range(200)]
    try:
        m.signal(signal.SIGTERM)
        # The workers stop accepting: new connections are refused...
        assert wait_until(lambda: refused(m.address)), "still accepting after SIGTERM"
        # ...while the 200 requests in flight all complete.
        for client, _, _ in clients:
            client.sendall(b"go\n")
        for _, reader, _ in clients:
            assert reader.readline() == b"done\n"
        assert m.proc.wait(IO_TIMEOUT) == 0, m.proc.stderr.read().decode()
    finally:
        for client, reader, _ in clients:
            reader.close()
            client.close()


@pytest.mark.parametrize("server", ["ThreadingHTTPServer", "ThreadedHTTPServer"])
def test_sigterm_closes_idle_keep_alive_connections_and_exits_0(master, server):
    m = master(2, 0, HTTP_SERVER, [server])
    m.wait_for_workers(2)
    idle, busy = KeepAlive(m.address, "http"), KeepAlive(m.address, "http")
    try:
        assert idle.request(b"0123456789") == b"0123456789"
        busy.start(b"abcdefghij")
        m.signal(signal.SIGTERM)
        # The idle connection is closed, the request in flight answered...
        assert idle.closed_by_server(timeout=IO_TIMEOUT)
        assert busy.finish(b"abcdefghij") == b"abcdefghij"
        # ...and the workers exit by themselves, long before graceful_timeout (30 s).
        assert m.proc.wait(IO_TIMEOUT) == 0, m.proc.stderr.read().decode()
        assert b"killed" not in m.proc.stderr.read()
    finally:
        idle.close()
        busy.close()


def test_killed_worker_is_replaced(master):
    m = master(1)
    (first,) = m.wait_for_workers(1)
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: m.workers() not in (set(), {first})), m.workers()
    (second,) = m.wait_for_workers(1)
    client, reader, pid = m.connect()
    with client, reader:
        assert pid == second != first
    m.signal(signal.SIGTERM)
    assert m.proc.wait(IO_TIMEOUT) == 0
    assert b"killed by SIGKILL" in m.proc.stderr.read()


def test_ttin_ttou_hup(master):
    m = master(1)
    m.wait_for_workers(1)
    m.signal(signal.SIGTTIN)
    m.wait_for_workers(2)
    m.signal(signal.SIGTTIN)
    three = m.wait_for_workers(3)
    m.signal(signal.SIGTTOU)
    m.wait_for_workers(2)
    assert m.workers() < three  # the oldest went, no new one came
    # HUP: a new set of workers, the old ones stopped.
    before = m.workers()
    m.signal(signal.SIGHUP)
    assert wait_until(lambda: len(m.workers()) == 2 and not m.workers() & before)
    client, reader, pid = m.connect()
    with client, reader:
        assert pid in m.workers()
    m.signal(signal.SIGTERM)
    assert m.proc.wait(IO_TIMEOUT) == 0


def test_sigint_is_quick(master):
    m = master(2)
    m.wait_for_workers(2)
    client, reader, _ = m.connect()
    with client, reader:
        started = time.monotonic()
        m.signal(signal.SIGINT)
        assert m.proc.wait(IO_TIMEOUT) == 0
        # The request in flight was cut, not waited for.
        assert reader.readline() == b""
        assert time.monotonic() - started < 5


def test_reuse_port_workers_bind_their_own(master):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m = master(2, port)
    m.wait_for_workers(2)
    assert wait_until(lambda: not refused(m.address))
    seen = set()
    for _ in range(40):
        client, reader, pid = m.connect()
        with client, reader:
            seen.add(pid)
        if len(seen) == 2:
            break
    assert seen == m.workers()
    m.signal(signal.SIGTERM)
    assert m.proc.wait(IO_TIMEOUT) == 0


def test_refuses_to_fork_with_threads_running():
    server = socketserver_rs.TCPServer(("127.0.0.1", 0), socketserver_rs.BaseRequestHandler)
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        with pytest.raises(RuntimeError, match="before any thread starts"):
            serve_prefork(server, workers=1)
    finally:
        release.set()
        thread.join()
        server.server_close()
    with pytest.raises(ValueError, match="workers"):
        serve_prefork(server, workers=0)
