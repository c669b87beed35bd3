"""The PROXY protocol: the header parser (src/proxy.rs, through proxy.py) and
ProxyProtocolMixIn, with hand-made headers. test_haproxy.py puts HAProxy
itself in front of servers."""

import ast
import ipaddress
import logging
import socket
import struct
import threading
import time

import pytest
from conftest import IO_TIMEOUT, fast_path_of, read_to_eof, require, still_open, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

import socketserver_rs
from socketserver_rs.proxy import (
    ProxyHeader,
    ProxyHeaderError,
    ProxyProtocolMixIn,
    parse_proxy_header,
    read_proxy_header,
)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command, family, body):
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


def v2_inet(source, destination, tlvs=b""):
    (src, sport), (dst, dport) = source, destination
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return v2(0x21, 0x11, body + tlvs)


def v2_inet6(source, destination, family=0x21):
    (src, sport), (dst, dport) = source, destination
    body = (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack("!HH", sport, dport)
    )
    return v2(0x21, family, body)


class Report(socketserver_rs.StreamRequestHandler):
    """Replies with repr((client_address, the first line the client sent))."""

    def handle(self):
        self.server.handled += 1
        line = self.rfile.readline()
        self.wfile.write(repr((self.client_address, line)).encode() + b"\n")


class ProxiedServer(ProxyProtocolMixIn, socketserver_rs.ThreadingTCPServer):
    handled = 0


@pytest.fixture
def proxied(runner):
    def start(**attributes):
        server = ProxiedServer(("127.0.0.1", 0), Report)
        for name, value in attributes.items():
            setattr(server, name, value)
        runner.start(server)
        return server

    return start


def ask(server, *pieces, pause=0.0):
    """Send the pieces (pausing between them); the handler's reply, or None
    when the server closed the connection without one."""
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        for piece in pieces:
            client.sendall(piece)
            time.sleep(pause)
        data, closed = read_to_eof(client)
        assert closed
        return (client.getsockname(), ast.literal_eval(data.decode()) if data else None)


# The parser.


def test_v1_headers():
    header = parse_proxy_header(b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\nGET /")
    assert header == ProxyHeader(
        1, 42, "PROXY", socket.AF_INET, socket.SOCK_STREAM, ("203.0.113.7", 4242), ("192.0.2.1", 80)
    )
    header = parse_proxy_header(b"PROXY TCP6 2001:db8::1 ::1 5000 443\r\n")
    assert header.source == ("2001:db8::1", 5000, 0, 0)
    header = parse_proxy_header(b"PROXY UNKNOWN\r\n")
    assert (header.family, header.source, header.client_address("real")) == (0, None, "real")


def test_v2_headers():
    data = v2_inet(("198.51.100.2", 1234), ("192.0.2.1", 443), tlvs=b"\x04\x00\x02ok")
    header = parse_proxy_header(data + b"app")
    assert header.length == len(data)
    assert header.source == ("198.51.100.2", 1234)
    assert header.tlvs == ((4, b"ok"),)
    header = parse_proxy_header(v2_inet6(("2001:db8::7", 1), ("::1", 2)))
    assert header.source == ("2001:db8::7", 1, 0, 0)
    path = b"/run/client.sock".ljust(108, b"\0")
    header = parse_proxy_header(v2(0x21, 0x31, path + b"\0abstract".ljust(108, b"\0")))
    assert (header.source, header.destination) == ("/run/client.sock", b"\0abstract")
    local = parse_proxy_header(v2(0x20, 0x11, bytes(12)))
    assert (local.command, local.source, local.client_address("real")) == ("LOCAL", None, "real")


def test_incomplete_and_malformed():
    data = v2_inet(("198.51.100.2", 1234), ("192.0.2.1", 443))
    assert parse_proxy_header(data[:16]) == 12
    assert parse_proxy_header(b"") >= 1
    for bad in [b"GET / HTTP/1.1\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", b"\r\n\r\nX"]:
        with pytest.raises(ProxyHeaderError):
            parse_proxy_header(bad)
    with pytest.raises(ProxyHeaderError, match="107"):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 100)


def _valid_header():
    v1 = st.tuples(
        st.ip_addresses(v=4), st.ip_addresses(v=4), st.integers(0, 65535), st.integers(0, 65535)
    ).map(
        lambda f: b"PROXY TCP4 %s %s %d %d\r\n" % (str(f[0]).encode(), str(f[1]).encode(), *f[2:])
    )
    v2_ = st.tuples(st.ip_addresses(v=4), st.integers(0, 65535), st.binary(max_size=40)).map(
        lambda f: v2_inet(
            (str(f[0]), f[1]), ("127.0.0.1", 80), b"\xee" + struct.pack("!H", len(f[2])) + f[2]
        )
    )
    return st.one_of(v1, v2_)


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        _valid_header().flatmap(
            lambda h: st.tuples(st.just(h), st.binary(max_size=20), st.integers(0, 8)).map(
                lambda t: bytearray(t[0] + t[1])
            )
        ),
    ).map(bytes),
    st.integers(0, 400),
)
def test_parser_properties(data, cut):
    # What fuzzing checks, bounded: any input gives an answer (never a crash
    # or another exception), and the answers agree with each other.
    data = data[:cut] if cut < len(data) else data
    try:
        parsed = parse_proxy_header(data)
    except ProxyHeaderError:
        return
    if isinstance(parsed, int):
        assert 1 <= parsed <= 65551
        return
    assert parsed.length <= len(data)
    assert parse_proxy_header(data[: parsed.length]) == parsed
    assert parse_proxy_header(data + b"trailing") == parsed
    assert isinstance(parse_proxy_header(data[: parsed.length - 1]), int)


@settings(max_examples=150, deadline=None, database=None)
@given(_valid_header(), st.binary(max_size=30), st.data())
def test_mutated_headers(header, extra, data):
    mutated = bytearray(header + extra)
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    try:
        parsed = parse_proxy_header(bytes(mutated))
    except ProxyHeaderError:
        return
    assert isinstance(parsed, int) or parsed.length <= len(mutated)


def test_read_takes_the_header_only():
    client, server = socket.socketpair()
    with client, server:
        header = v2_inet(("198.51.100.2", 1234), ("192.0.2.1", 443))
        client.sendall(header[:5])
        threading.Timer(0.05, client.sendall, (header[5:] + b"app",)).start()
        assert read_proxy_header(server, timeout=IO_TIMEOUT).source == ("198.51.100.2", 1234)
        assert server.recv(10) == b"app"


def test_read_without_peeking():
    # Sockets that cannot peek (an SSLSocket, say) are read in steps.
    class Stepping(socket.socket):
        pass

    client, plain = socket.socketpair()
    server = Stepping(plain.family, plain.type, 0, plain.detach())
    with client, server:
        client.sendall(b"PROXY TCP4 10.1.2.3 10.0.0.1 7 8\r\nrest")
        assert read_proxy_header(server, timeout=IO_TIMEOUT).source == ("10.1.2.3", 7)
        assert server.recv(10) == b"rest"


def test_read_timeout_and_eof():
    client, server = socket.socketpair()
    with client, server:
        client.sendall(b"PROXY TCP4 ")
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            read_proxy_header(server, timeout=0.2)
        assert time.monotonic() - started < 2
        assert server.gettimeout() is None
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(ProxyHeaderError, match="closed"):
            read_proxy_header(server, timeout=IO_TIMEOUT)


# The mix-in.


def test_v1_gives_the_handler_the_client(proxied):
    server = proxied()
    _, reply = ask(server, b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\nhello\n")
    assert reply == (("203.0.113.7", 4242), b"hello\n")
    # The header in pieces, the application bytes after it untouched.
    _, reply = ask(
        server, b"PROXY TCP4 203.0.", b"113.7 192.0.2.1 4242 80\r", b"\nhi\n", pause=0.05
    )
    assert reply == (("203.0.113.7", 4242), b"hi\n")
    assert fast_path_of(server) is None


def test_v2_ipv4(proxied):
    server = proxied()
    header = v2_inet(("198.51.100.2", 1234), ("192.0.2.1", 443), tlvs=b"\x04\x00\x01x")
    assert ask(server, header + b"one\n")[1] == (("198.51.100.2", 1234), b"one\n")
    assert ask(server, header, b"two\n", pause=0.02)[1] == (("198.51.100.2", 1234), b"two\n")


# Each family of header on each family of server. REAL: the proxy
# connection's own peer; None: refused (closed, one line logged).
REAL = "real"
UNIX_PATHS = b"/run/client.sock".ljust(108, b"\0") + b"/run/server.sock".ljust(108, b"\0")
HEADERS = {
    "v1-tcp4": b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\n",
    "v1-tcp6": b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 80\r\n",
    "v1-tcp6-mapped": b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:192.0.2.1 4242 80\r\n",
    "v2-tcp4": v2_inet(("203.0.113.7", 4242), ("192.0.2.1", 80)),
    "v2-tcp6": v2_inet6(("2001:db8::7", 4242), ("2001:db8::1", 80)),
    "v2-tcp6-mapped": v2_inet6(("::ffff:203.0.113.7", 4242), ("::ffff:192.0.2.1", 80)),
    "v2-udp4": v2(0x21, 0x12, v2_inet(("203.0.113.7", 4242), ("192.0.2.1", 80))[16:]),
    "v2-udp6": v2_inet6(("2001:db8::7", 4242), ("2001:db8::1", 80), family=0x22),
    "v2-unix": v2(0x21, 0x31, UNIX_PATHS),
    "v2-unix-dgram": v2(0x21, 0x32, UNIX_PATHS),
    "v2-local": v2(0x20, 0x21, bytes(36)),
    "v1-unknown": b"PROXY UNKNOWN\r\n",
}
V4 = ("203.0.113.7", 4242)
V6 = ("2001:db8::7", 4242, 0, 0)
MAPPED = ("::ffff:203.0.113.7", 4242, 0, 0)
REFUSED_EVERYWHERE = {"v2-udp4": None, "v2-udp6": None, "v2-unix-dgram": None}
KEEP_REAL = {"v2-unix": REAL, "v2-local": REAL, "v1-unknown": REAL}
EXPECTED = {
    "ipv4": {
        "v1-tcp4": V4,
        "v1-tcp6": None,
        "v1-tcp6-mapped": V4,
        "v2-tcp4": V4,
        "v2-tcp6": None,
        "v2-tcp6-mapped": V4,
        **REFUSED_EVERYWHERE,
        **KEEP_REAL,
    },
    "ipv6": {
        "v1-tcp4": MAPPED,
        "v1-tcp6": V6,
        "v1-tcp6-mapped": MAPPED,
        "v2-tcp4": MAPPED,
        "v2-tcp6": V6,
        "v2-tcp6-mapped": MAPPED,
        **REFUSED_EVERYWHERE,
        **KEEP_REAL,
    },
    # A Unix socket's peer names no client: IP sources are given as named.
    "unix": {
        "v1-tcp4": V4,
        "v1-tcp6": V6,
        "v1-tcp6-mapped": MAPPED,
        "v2-tcp4": V4,
        "v2-tcp6": V6,
        "v2-tcp6-mapped": MAPPED,
        **REFUSED_EVERYWHERE,
        **KEEP_REAL,
    },
}


def family_server(runner, family, tmp_path):
    if family == "unix":
        require(hasattr(socket, "AF_UNIX"), "no Unix sockets")

        class Server(ProxyProtocolMixIn, socketserver_rs.ThreadingUnixStreamServer):
            handled = 0

        address = str(tmp_path / "proxied.sock")
    elif family == "ipv6":
        require(socket.has_ipv6, "no IPv6")

        class Server(ProxyProtocolMixIn, socketserver_rs.ThreadingTCPServer):
            address_family = socket.AF_INET6
            handled = 0

        address = ("::1", 0)
    else:
        Server, address = ProxiedServer, ("127.0.0.1", 0)
    server = runner.track(Server(address, Report))
    runner.start(server)
    return server


def ask_any(server, payload):
    """ask() for any family: (the client's own address as the server sees
    it, the reply or None)."""
    family = server.socket.family
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(IO_TIMEOUT)
        client.connect(server.server_address)
        client.sendall(payload)
        data, closed = read_to_eof(client)
        assert closed
        me = "" if family == getattr(socket, "AF_UNIX", None) else client.getsockname()
        return me, ast.literal_eval(data.decode()) if data else None


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_each_header_family_on_each_server_family(runner, tmp_path, caplog, family):
    server = family_server(runner, family, tmp_path)
    got, refusals = {}, 0
    for name, header in HEADERS.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="socketserver_rs"):
            me, reply = ask_any(server, header + b"line\n")
        if reply is None:
            got[name] = None
            refusals += 1
            (record,) = [r for r in caplog.records if "PROXY header" in r.getMessage()]
            continue
        address, line = reply
        assert line == b"line\n"
        got[name] = REAL if address == me else address
    assert got == EXPECTED[family]
    assert server.handled == len(HEADERS) - refusals


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_the_client_address_has_the_shape_accept_gives(runner, tmp_path, family):
    server = family_server(runner, family, tmp_path)
    for name, header in HEADERS.items():
        me, reply = ask_any(server, header + b"line\n")
        if reply is not None:
            assert (type(reply[0]), len(reply[0])) == (type(me), len(me)), name


def test_local_and_unknown_keep_the_real_peer(proxied):
    server = proxied()
    me, reply = ask(server, v2(0x20, 0x00, b"") + b"check\n")
    assert reply == (me, b"check\n")
    me, reply = ask(server, b"PROXY UNKNOWN\r\nx\n")
    assert reply == (me, b"x\n")


@pytest.mark.parametrize(
    "payload",
    [b"GET / HTTP/1.0\r\n\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n\n", v2(0x21, 0x11, bytes(3))],
    ids=["missing", "malformed-v1", "malformed-v2"],
)
def test_bad_header_closes_and_logs(proxied, caplog, payload):
    server = proxied()
    with caplog.at_level(logging.WARNING, logger="socketserver_rs"):
        assert ask(server, payload)[1] is None
    assert server.handled == 0
    (record,) = [r for r in caplog.records if "PROXY header" in r.getMessage()]
    assert record.name == "socketserver_rs"


def test_slow_header_times_out_without_stalling_others(proxied, caplog):
    server = proxied(proxy_header_timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="socketserver_rs"):
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as slow:
            slow.sendall(b"PROXY TCP4 1.2.3.4")
            started = time.monotonic()
            # Another client is served meanwhile: the wait is on a worker.
            reply = ask(server, b"PROXY TCP4 10.9.9.9 10.0.0.1 9 9\r\nfast\n")[1]
            assert reply == (("10.9.9.9", 9), b"fast\n")
            data, closed = read_to_eof(slow)
            assert (data, closed) == (b"", True)
            assert 0.25 < time.monotonic() - started < 5
    assert any("timed out" in r.getMessage() for r in caplog.records)
    assert server.handled == 1


def stalled(server, count):
    """`count` connections that send part of a header and nothing more,
    once the server has taken them all."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
        client.sendall(b"PROXY TCP4 1.2")
        clients.append(client)
    assert wait_until(lambda: server.stats()["requests_active"] == count)
    return clients


def test_stalled_headers_hold_no_worker_of_a_bounded_pool(proxied):
    server = proxied(max_threads=8, proxy_header_timeout=60)
    clients = stalled(server, 16)
    try:
        reply = ask(server, b"PROXY TCP4 10.9.9.9 10.0.0.1 9 9\r\nserved\n")[1]
        assert reply == (("10.9.9.9", 9), b"served\n")
        assert all(still_open(client) for client in clients)
    finally:
        for client in clients:
            client.close()


def test_stalled_headers_do_not_stop_a_non_threading_server(runner):
    class Server(ProxyProtocolMixIn, socketserver_rs.TCPServer):
        handled = 0
        proxy_header_timeout = 60

    server = runner.track(Server(("127.0.0.1", 0), Report))
    runner.start(server)
    clients = stalled(server, 3)
    try:
        reply = ask(server, b"PROXY TCP4 10.9.9.9 10.0.0.1 9 9\r\nserved\n")[1]
        assert reply == (("10.9.9.9", 9), b"served\n")
        assert all(still_open(client) for client in clients)
        server.shutdown()
        server.server_close()
        for client in clients:
            client.settimeout(IO_TIMEOUT)
            assert client.recv(1) == b""
    finally:
        for client in clients:
            client.close()


def test_peer_not_allowed_is_refused(proxied, caplog):
    server = proxied(proxy_protocol_peers=("10.0.0.0/8", "192.0.2.1"))
    with caplog.at_level(logging.WARNING, logger="socketserver_rs"):
        assert ask(server, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nx\n")[1] is None
    assert server.handled == 0
    assert any("not in proxy_protocol_peers" in r.getMessage() for r in caplog.records)


def test_allow_list_forms():
    from socketserver_rs.proxy import peer_allowed

    default = ProxyProtocolMixIn.proxy_protocol_peers
    assert peer_allowed(default, ("127.0.0.1", 5))
    assert peer_allowed(default, ("::1", 5, 0, 0))
    assert peer_allowed(default, ("::ffff:127.0.0.2", 5, 0, 0))
    assert not peer_allowed(default, ("192.0.2.1", 5))
    assert peer_allowed(None, ("192.0.2.1", 5))
    assert peer_allowed(["fe80::/10"], ("fe80::1%eth0", 5, 0, 2))
    assert peer_allowed(default, "")  # a Unix socket peer
    assert ipaddress.ip_address("127.0.0.1") in ipaddress.ip_network(default[0])


def test_without_the_mixin_nothing_is_read(runner):
    # Opt-in only: a plain server hands the header to the handler as data.
    server = runner.track(socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Report))
    server.handled = 0
    runner.start(server)
    me, reply = ask(server, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
    assert reply == (me, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
