"""A request hook set or patched while serve_forever() runs applies from the
next request on, as in the standard module, and removing it serves as
before."""

import abc
import contextlib
import socket
import threading
from unittest import mock

import pytest
from conftest import exchange, fast_path_of, wait_until

import socketserver_rs


def refuse(server, request, client_address):
    return False


def closes_without_reply(server, request):
    server.shutdown_request(request)


@contextlib.contextmanager
def on_instance(server, mod):
    server.verify_request = refuse.__get__(server)
    yield
    del server.verify_request


def on_class(server, mod):
    return mock.patch.object(type(server), "verify_request", refuse)


def on_base_server(server, mod):
    return mock.patch.object(mod.BaseServer, "verify_request", refuse)


def on_threading_mixin(server, mod):
    return mock.patch.object(mod.ThreadingMixIn, "process_request", closes_without_reply)


class Upper(socketserver_rs.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline().upper())


def served(server, line):
    reply, closed = exchange(server.server_address, line)
    assert closed
    return reply


def assert_refused_while_set(runner, ssmod, cls, setting):
    """A server of cls serves, refuses the requests made while `setting`
    holds, then serves again (back on the fast path, on ours)."""
    server = runner.track(cls(("127.0.0.1", 0), Upper))
    if ssmod is socketserver_rs:
        assert fast_path_of(server) is not None
    runner.start(server)
    assert served(server, b"before\n") == b"BEFORE\n"
    with setting(server, ssmod):
        assert served(server, b"refused\n") == b""
        assert served(server, b"refused again\n") == b""
    assert served(server, b"after\n") == b"AFTER\n"
    if ssmod is socketserver_rs:
        assert fast_path_of(server) is not None


@pytest.mark.parametrize(
    "setting, base",
    [
        (on_instance, "TCPServer"),
        (on_instance, "ThreadingTCPServer"),
        (on_class, "TCPServer"),
        (on_class, "ThreadingTCPServer"),
        (on_base_server, "TCPServer"),
        (on_base_server, "ThreadingTCPServer"),
        (on_threading_mixin, "ThreadingTCPServer"),
    ],
)
def test_a_hook_set_while_serving_applies_to_the_next_request(ssmod, runner, setting, base):
    # A subclass of the module's own, so that patching it changes no other test.
    cls = type("Server", (getattr(ssmod, base),), {})
    assert_refused_while_set(runner, ssmod, cls, setting)


class Echo(socketserver_rs.MessageRequestHandler):
    def handle_message(self, message):
        return message.upper()


def message_exchange(address, payload):
    with socket.create_connection(address, timeout=10) as client:
        socketserver_rs.send_message(client, payload)
        try:
            return socketserver_rs.recv_message(client)
        except (EOFError, ConnectionResetError):
            return None


@pytest.mark.parametrize("setting", [on_instance, on_class, on_base_server])
@pytest.mark.parametrize("base", ["TCPServer", "ThreadingTCPServer"])
def test_a_hook_set_while_event_driven_connections_are_served(runner, setting, base):
    cls = type("Server", (getattr(socketserver_rs, base),), {})
    server = runner.track(cls(("127.0.0.1", 0), Echo))
    runner.start(server)
    assert message_exchange(server.server_address, b"before") == b"BEFORE"
    with socket.create_connection(server.server_address, timeout=10) as kept:
        socketserver_rs.send_message(kept, b"kept")
        assert socketserver_rs.recv_message(kept) == b"KEPT"
        with setting(server, socketserver_rs):
            assert message_exchange(server.server_address, b"refused") is None
            # A connection the loop served before goes on being served.
            socketserver_rs.send_message(kept, b"still")
            assert socketserver_rs.recv_message(kept) == b"STILL"
    assert message_exchange(server.server_address, b"after") == b"AFTER"


class Registering(type):
    """A user's own metaclass."""

    registry = []

    def __init__(cls, name, bases, namespace):
        super().__init__(name, bases, namespace)
        Registering.registry.append(cls)


@pytest.mark.parametrize("metaclass", [abc.ABCMeta, Registering])
@pytest.mark.parametrize("base", ["TCPServer", "ThreadingTCPServer"])
def test_a_server_class_with_another_metaclass_is_served_and_patched(
    ssmod, runner, metaclass, base
):
    bases = (getattr(ssmod, base), abc.ABC) if metaclass is abc.ABCMeta else (getattr(ssmod, base),)
    cls = metaclass("Server", bases, {})
    assert_refused_while_set(runner, ssmod, cls, on_class)


@pytest.mark.parametrize("base", ["TCPServer", "ThreadingTCPServer"])
def test_a_server_given_another_class_while_serving_takes_its_hooks(ssmod, runner, base):
    cls = type("Server", (getattr(ssmod, base),), {})
    refusing = type("Refusing", (cls,), {"verify_request": refuse})
    server = runner.track(cls(("127.0.0.1", 0), Upper))
    runner.start(server)
    assert served(server, b"before\n") == b"BEFORE\n"
    server.__class__ = refusing
    assert served(server, b"refused\n") == b""
    server.__class__ = cls
    assert served(server, b"after\n") == b"AFTER\n"


class DatagramLength(socketserver_rs.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(b"%d" % len(data), self.client_address)


@pytest.mark.parametrize("where", ["instance", "class"])
@pytest.mark.parametrize("base", ["UDPServer", "ThreadingUDPServer"])
def test_max_packet_size_set_while_serving_applies_to_the_next_datagram(ssmod, runner, where, base):
    # The standard module reads max_packet_size for each datagram.
    cls = type("Server", (getattr(ssmod, base),), {})
    server = runner.track(cls(("127.0.0.1", 0), DatagramLength))
    runner.start(server)
    target = server if where == "instance" else cls
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)

        def received_length():
            client.sendto(b"x" * 100, server.server_address)
            return int(client.recv(64))

        assert received_length() == 100
        target.max_packet_size = 10
        assert received_length() == 10
        target.max_packet_size = 50
        assert received_length() == 50


@pytest.mark.parametrize("patched", ["verify_request", "max_packet_size"])
def test_a_class_patch_applies_to_datagrams_already_queued(ssmod, runner, patched):
    # The handler of the first datagram waits while more are queued and the
    # class is patched: the standard module takes each queued datagram
    # through the patched class.
    proceed = threading.Event()
    seen = []

    class Handler(ssmod.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            seen.append(data)
            if data == b"first":
                proceed.wait(10)
            sock.sendto(b"%d" % len(data), self.client_address)

    cls = type("Server", (ssmod.UDPServer,), {})
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    runner.start(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.sendto(b"first", server.server_address)
        assert wait_until(lambda: seen == [b"first"])
        for _ in range(3):
            client.sendto(b"queued", server.server_address)
        if patched == "verify_request":
            cls.verify_request = refuse
        else:
            cls.max_packet_size = 2
        proceed.set()
        assert client.recv(64) == b"5"
        if patched == "verify_request":
            client.settimeout(0.5)
            with pytest.raises(socket.timeout):
                client.recv(64)
            assert seen == [b"first"]
        else:
            assert [client.recv(64) for _ in range(3)] == [b"2"] * 3
            assert seen == [b"first"] + [b"qu"] * 3
