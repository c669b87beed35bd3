"""HAProxy in front of two servers with ProxyProtocolMixIn: each backend sees
the real client's address and port, with version 2 (send-proxy-v2) and
version 1 (send-proxy) headers, and the round robin reaches both.

HAProxy comes from Debian's package (`apt-get install -y haproxy`, which
.ci/run does when it is missing); without it the test is skipped, or fails
in CI."""

import os
import shutil
import socket
import subprocess
import time

import pytest
from conftest import IO_TIMEOUT, read_to_eof, require

import socketserver_rs
from socketserver_rs.proxy import ProxyProtocolMixIn

CONFIG = """\
global
    maxconn 64

defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s

frontend front
    bind 127.0.0.1:{front}
    default_backend servers

backend servers
    balance roundrobin
{servers}
"""


class WhoAmI(socketserver_rs.StreamRequestHandler):
    def handle(self):
        host, port = self.client_address[:2]
        self.wfile.write(f"{self.server.name} {host} {port}\n".encode())


class Backend(ProxyProtocolMixIn, socketserver_rs.ThreadingTCPServer):
    pass


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def haproxy(tmp_path):
    # Debian installs it in sbin, which a user's PATH may leave out.
    executable = shutil.which(
        "haproxy", path=os.pathsep.join([os.defpath, "/usr/sbin", "/usr/local/sbin"])
    )
    require(executable, "haproxy not found (apt-get install -y haproxy)")
    started = []

    def start(backends, option):
        front = free_port()
        servers = "\n".join(
            f"    server s{i} 127.0.0.1:{b.server_address[1]} {option}"
            for i, b in enumerate(backends)
        )
        config = tmp_path / f"haproxy-{option}.cfg"
        config.write_text(CONFIG.format(front=front, servers=servers))
        check = subprocess.run(
            [executable, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        proc = subprocess.Popen(
            [executable, "-db", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        deadline = time.monotonic() + IO_TIMEOUT
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                return front
            except OSError:
                assert time.monotonic() < deadline, "haproxy did not listen"
                time.sleep(0.05)

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(IO_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize("option", ["send-proxy-v2", "send-proxy"])
def test_haproxy_in_front_of_two_servers(runner, haproxy, option):
    backends = []
    for name in ("a", "b"):
        server = Backend(("127.0.0.1", 0), WhoAmI)
        server.name = name
        backends.append(runner.start(server).server)
    front = haproxy(backends, option)

    seen = set()
    for _ in range(6):
        with socket.socket() as client:
            client.settimeout(IO_TIMEOUT)
            client.bind(("127.0.0.1", 0))
            client.connect(("127.0.0.1", front))
            data, closed = read_to_eof(client)
            assert closed
            name, host, port = data.decode().split()
            # The handler sees this client, not HAProxy's own connection.
            assert (host, int(port)) == client.getsockname()
            seen.add(name)
    assert seen == {"a", "b"}
