"""Socket activation: a server adopts listening sockets passed as systemd
passes them (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, descriptors from 3),
or by descriptor number."""

import ast
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import IO_TIMEOUT, read_to_eof

import socketserver_rs
from socketserver_rs.activation import adopt, listen_fds, listen_fds_with_names

# The child that systemd would start: it adopts what it was given, serves
# one request reporting what it saw, and exits.
CHILD = textwrap.dedent(
    """
    import os, sys
    import socketserver_rs
    from socketserver_rs.activation import adopt, listen_fds_with_names

    pid = os.environ.get("LISTEN_PID")
    passed = listen_fds_with_names()
    seen = {
        "pid_was_mine": pid == str(os.getpid()),
        "names": [name for name, _ in passed],
        "fds": [sock.fileno() for _, sock in passed],
        "cloexec": [not os.get_inheritable(sock.fileno()) for _, sock in passed],
        "environment_left": [v for v in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
                             if v in os.environ],
    }

    class Report(socketserver_rs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(repr(seen).encode())

    with adopt(socketserver_rs.TCPServer, Report, passed[0][1]) as server:
        server.timeout = 10
        server.handle_request()
    """
)


# What systemd does between fork() and exec(): the socket to descriptor 3,
# LISTEN_PID to the pid that exec() keeps.
LAUNCHER = textwrap.dedent(
    """
    import os, sys
    fd = int(sys.argv[1])
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[2]])
    """
)


def run_activated(listener, names="web"):
    """Start CHILD as systemd would, with listener as its descriptor 3."""
    fd = listener.fileno()
    env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES=names)
    env.pop("LISTEN_PID", None)
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(fd), CHILD],
        env=env,
        pass_fds=[fd],
        stderr=subprocess.PIPE,
    )


def test_systemd_style_activation():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        child = run_activated(listener)
    # Only the child holds the listening socket now.
    try:
        with socket.create_connection(address, timeout=IO_TIMEOUT) as client:
            data, closed = read_to_eof(client)
        seen = ast.literal_eval(data.decode())
        assert seen == {
            "pid_was_mine": True,
            "names": ["web"],
            "fds": [3],
            "cloexec": [True],
            "environment_left": [],
        }
        assert child.wait(IO_TIMEOUT) == 0, child.stderr.read().decode()
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    # The child closed it on exit: nothing listens there any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=IO_TIMEOUT).close()


def test_variables_for_another_process_are_ignored(monkeypatch):
    # Descriptors named for another pid (a parent's environment, inherited)
    # are not ours: nothing is adopted, and the variables are removed.
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "web")
    assert listen_fds() == []
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)
    assert listen_fds_with_names() == []


def test_malformed_variables(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "-1")
    with pytest.raises(ValueError, match="LISTEN_FDS"):
        listen_fds()
    assert "LISTEN_PID" not in os.environ
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "0")
    monkeypatch.setenv("LISTEN_FDNAMES", "a:b")
    with pytest.raises(ValueError, match="LISTEN_FDNAMES"):
        listen_fds(unset_environment=False)
    assert os.environ["LISTEN_FDNAMES"] == "a:b"


def test_wrong_type_is_a_clear_error():
    handler = socketserver_rs.BaseRequestHandler
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="SOCK_DGRAM socket into TCPServer"):
            adopt(socketserver_rs.TCPServer, handler, udp)
        fd = udp.fileno()
        with pytest.raises(ValueError, match="SOCK_DGRAM"):
            adopt(socketserver_rs.TCPServer, handler, fd)
        assert udp.fileno() == fd  # a descriptor refused is left open
        os.fstat(fd)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as v6:
        with pytest.raises(ValueError, match="AF_INET6 SOCK_STREAM socket into TCPServer"):
            adopt(socketserver_rs.TCPServer, handler, v6)
    with socket.socket() as idle:
        idle.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="not listening"):
            adopt(socketserver_rs.TCPServer, handler, idle)


def test_adopt_by_descriptor_number(runner):
    class Echo(socketserver_rs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline().upper())

    made = []

    class Server(socketserver_rs.ThreadingTCPServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.socket)

    listener = socket.create_server(("127.0.0.1", 0))
    listener.set_inheritable(True)
    address = listener.getsockname()
    fd = listener.detach()
    server = adopt(Server, Echo, fd)
    assert server.socket.fileno() == fd
    assert server.server_address == address
    assert not os.get_inheritable(fd)
    # The socket the constructor made was closed, not leaked.
    assert made[0] is not server.socket and made[0].fileno() == -1
    runner.start(server)
    with socket.create_connection(address, timeout=IO_TIMEOUT) as client:
        client.sendall(b"adopted\n")
        assert read_to_eof(client)[0] == b"ADOPTED\n"
    runner.teardown()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_adopt_unix_and_udp(runner, unix_path):
    class Upper(socketserver_rs.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read().upper())

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    server = runner.track(adopt(socketserver_rs.ThreadingUDPServer, Upper, udp))
    runner.start(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(IO_TIMEOUT)
        client.sendto(b"ping", server.server_address)
        assert client.recv(100) == b"PING"

    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(unix_path)
    unix.listen()
    server = runner.track(adopt(socketserver_rs.UnixStreamServer, Upper, unix))
    assert server.server_address == unix_path
