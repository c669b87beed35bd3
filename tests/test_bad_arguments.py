"""Bad arguments and misuse: addresses, handler classes, sizes, timeouts
and buffer sizes the standard module does not check, and a server used
after server_close(). Each case runs on the standard module and on ours,
and what it returns or raises is compared."""

import os
import socket
import socketserver as std
import subprocess
import sys
import time

import pytest
from conftest import Serving, read_to_eof

import socketserver_rs as rs

pytestmark = pytest.mark.timeout(60)

LOCAL = ("127.0.0.1", 0)


def outcome_of(case, ss):
    """("returned", value) or ("raised", exception type, message)."""
    try:
        return ("returned", case(ss))
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed
        return ("raised", type(exc), str(exc))


def construct(cls_name, address):
    def case(ss):
        with getattr(ss, cls_name)(address, ss.BaseRequestHandler):
            return "constructed"

    return case


def quiet_server(ss, base_name, **attrs):
    """A server class whose handle_error records the exception's type."""
    errors = []

    def handle_error(self, request, client_address):
        errors.append(sys.exc_info()[0].__name__)

    cls = type("Server", (getattr(ss, base_name),), {"handle_error": handle_error, **attrs})
    return cls, errors


def handler_not_callable(mode):
    def case(ss):
        base = "ThreadingTCPServer" if mode == "threading" else "TCPServer"
        cls, errors = quiet_server(ss, base)
        with cls(LOCAL, 42) as server:
            server.timeout = 5
            with socket.create_connection(server.server_address, timeout=5) as client:
                if mode == "handle_request":
                    returned = server.handle_request()
                    _, closed = read_to_eof(client, 2.0)
                else:
                    with Serving(server) as serving:
                        _, closed = read_to_eof(client, 2.0)
                    returned = serving.errors[0] if serving.errors else None
        return returned, closed, errors

    return case


def negative_queue_size(ss):
    cls, errors = quiet_server(ss, "TCPServer", request_queue_size=-1)
    with cls(LOCAL, ss.BaseRequestHandler) as server:
        server.timeout = 5
        with socket.create_connection(server.server_address, timeout=5) as client:
            server.handle_request()
            return read_to_eof(client, 2.0), errors


def packet_size(size, mode):
    def case(ss):
        base = "ThreadingUDPServer" if mode == "threading" else "UDPServer"
        cls, errors = quiet_server(ss, base, max_packet_size=size)
        with cls(LOCAL, ss.BaseRequestHandler) as server:
            server.timeout = 5
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.sendto(b"x", server.server_address)
                if mode == "handle_request":
                    server.handle_request()
                    return "returned", errors
                with Serving(server) as serving:
                    serving.returned.wait(2.0)
                raised = serving.errors[0] if serving.errors else None
                return (type(raised).__name__ if raised else None), errors

    return case


def negative_timeout(value):
    def case(ss):
        timeouts = []
        cls, _ = quiet_server(ss, "TCPServer", timeout=value)
        cls.handle_timeout = lambda self: timeouts.append(True)
        with cls(LOCAL, ss.BaseRequestHandler) as server:
            start = time.monotonic()
            server.handle_request()
            return timeouts, time.monotonic() - start < 1.0

    return case


def wait_timeout(method, value):
    """serve_forever(poll_interval) or handle_request() with server.timeout
    set to `value`, a client already waiting: a wait that takes the value
    returns at once; one that refuses it raises."""

    def case(ss):
        cls, errors = quiet_server(ss, "TCPServer")
        with cls(LOCAL, ss.BaseRequestHandler) as server:
            with socket.create_connection(server.server_address, timeout=5) as client:
                if method == "handle_request":
                    server.timeout = value
                    return server.handle_request(), read_to_eof(client, 2.0), errors
                served = None
                with Serving(server, poll_interval=value) as serving:
                    # A refused value ends serve_forever() at its first wait.
                    if not serving.returned.wait(0.5):
                        served = read_to_eof(client, 2.0)
                if serving.errors:
                    raise serving.errors[0]
                return "returned", served, errors

    return case


def buffer_sizes(rbufsize, wbufsize):
    def case(ss):
        class Handler(ss.StreamRequestHandler):
            def handle(self):
                self.wfile.write(self.rfile.readline())

        Handler.rbufsize = rbufsize
        Handler.wbufsize = wbufsize
        cls, errors = quiet_server(ss, "TCPServer")
        with cls(LOCAL, Handler) as server:
            server.timeout = 5
            with socket.create_connection(server.server_address, timeout=5) as client:
                client.sendall(b"echo me\n")
                server.handle_request()
                return read_to_eof(client, 2.0), errors

    return case


def reuse_after_close(cls_name, method):
    def case(ss):
        with getattr(ss, cls_name)(LOCAL, ss.BaseRequestHandler) as server:
            server.server_close()
            server.timeout = 1.0  # bound our wait, should the call block
            if method == "handle_request":
                return server.handle_request()
            with Serving(server) as serving:
                if not serving.returned.wait(1.0):
                    return "still serving after 1 s"
            if serving.errors:
                raise serving.errors[0]
            return "returned"

    return case


BAD_ARGUMENTS = {
    "address-None": construct("TCPServer", None),
    "address-hostname-str": construct("TCPServer", "localhost"),
    "address-port-str": construct("TCPServer", ("127.0.0.1", "80")),
    "address-3-tuple": construct("TCPServer", ("127.0.0.1", 0, 0)),
    "address-ipv6-on-inet": construct("TCPServer", ("::1", 0)),
    "address-path-on-tcp": construct("TCPServer", "/tmp/not-a-tcp-address"),
    "address-tuple-on-unix": construct("UnixStreamServer", ("127.0.0.1", 0)),
    "udp-address-None": construct("UDPServer", None),
    "port-minus-1": construct("TCPServer", ("127.0.0.1", -1)),
    "port-65536": construct("TCPServer", ("127.0.0.1", 65536)),
    "udp-port-65536": construct("UDPServer", ("127.0.0.1", 65536)),
    "handler-42-handle_request": handler_not_callable("handle_request"),
    "handler-42-serve_forever": handler_not_callable("serve_forever"),
    "handler-42-threading": handler_not_callable("threading"),
    "request_queue_size-minus-1": negative_queue_size,
    "max_packet_size-minus-1-handle_request": packet_size(-1, "handle_request"),
    "max_packet_size-minus-1-serve_forever": packet_size(-1, "serve_forever"),
    "timeout-minus-1": negative_timeout(-1),
    "timeout-str": negative_timeout("soon"),
    "wait-inf-handle_request": wait_timeout("handle_request", float("inf")),
    "wait-inf-serve_forever": wait_timeout("serve_forever", float("inf")),
    "wait-minus-inf-handle_request": wait_timeout("handle_request", float("-inf")),
    "wait-minus-inf-serve_forever": wait_timeout("serve_forever", float("-inf")),
    "wait-nan-handle_request": wait_timeout("handle_request", float("nan")),
    "wait-nan-serve_forever": wait_timeout("serve_forever", float("nan")),
    "wait-1e300-handle_request": wait_timeout("handle_request", 1e300),
    "wait-1e300-serve_forever": wait_timeout("serve_forever", 1e300),
    "wait-1e10-handle_request": wait_timeout("handle_request", 1e10),
    "wait-1e10-serve_forever": wait_timeout("serve_forever", 1e10),
    "wait-above-poll-limit-handle_request": wait_timeout("handle_request", 2147483.648),
    "wait-above-poll-limit-serve_forever": wait_timeout("serve_forever", 2147483.648),
    # (serve_forever() would keep the standard shutdown() waiting that long.)
    "wait-at-poll-limit-handle_request": wait_timeout("handle_request", 2147483.0),
    "bufsize-0-0": buffer_sizes(0, 0),
    "bufsize-1-1": buffer_sizes(1, 1),
    "bufsize-minus-5": buffer_sizes(-5, -5),
    "bufsize-None": buffer_sizes(None, None),
    "bufsize-float": buffer_sizes(1.5, 0),
    "bufsize-str-read": buffer_sizes("big", 0),
    "bufsize-str-write": buffer_sizes(-1, "big"),
    "bufsize-huge-write": buffer_sizes(-1, 1 << 20),
    "closed-tcp-serve_forever": reuse_after_close("TCPServer", "serve_forever"),
    "closed-tcp-handle_request": reuse_after_close("TCPServer", "handle_request"),
    "closed-udp-serve_forever": reuse_after_close("UDPServer", "serve_forever"),
    "closed-threading-serve_forever": reuse_after_close("ThreadingTCPServer", "serve_forever"),
}


@pytest.mark.parametrize("name", list(BAD_ARGUMENTS))
def test_bad_arguments_like_stdlib(name):
    case = BAD_ARGUMENTS[name]
    expected = outcome_of(case, std)
    got = outcome_of(case, rs)
    if expected[0] == "raised":
        assert got[:2] == expected[:2], f"stdlib {expected}, socketserver_rs {got}"
        if expected[2]:
            assert got[2], "an empty message where the standard library has one"
    else:
        assert got == expected


HUGE_PACKET_CASE = """
import sys
sys.path.insert(0, sys.argv[1])
import socketserver
import socketserver_rs
from test_bad_arguments import outcome_of, packet_size
case = packet_size(int(sys.argv[2]), sys.argv[3])
for ss in (socketserver, socketserver_rs):
    print(outcome_of(case, ss)[:2], flush=True)
"""


@pytest.mark.parametrize("mode", ["serve_forever", "threading"])
@pytest.mark.parametrize("size", [2**62, 2**63])
def test_huge_max_packet_size_raises_as_in_the_standard_module(size, mode):
    # recvfrom(max_packet_size) allocates its buffer first: MemoryError,
    # or OverflowError past a C ssize_t; the fast path's receive buffer
    # must fail the same way. 2**62 bytes exceed any address space, so
    # that allocation fails at once and takes no memory. In a child
    # process: an allocation failure could abort it.
    tests = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.run(
        [sys.executable, "-c", HUGE_PACKET_CASE, tests, str(size), mode],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert child.returncode == 0, child.stderr
    expected, got = child.stdout.splitlines()
    assert got == expected
    assert "Error" in expected
