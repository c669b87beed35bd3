"""A reply reaches the client it was meant for, whatever its handler does to
the connection: the message loop owns the descriptor it reads and writes,
so a number that Python closed and the kernel reused (the next connection,
a socket the handler opened) never receives another connection's bytes."""

import random
import socket
import threading
import time

import pytest
from conftest import IO_TIMEOUT, start_recording, stop_serving, wait_until

import socketserver_rs
from socketserver_rs import MessageClient, MessageRequestHandler

SERVERS = {"plain": socketserver_rs.TCPServer, "threading": socketserver_rs.ThreadingTCPServer}


@pytest.fixture(params=sorted(SERVERS))
def server_class(request):
    return SERVERS[request.param]


start = start_recording
stop = stop_serving


def assert_nothing_to_read(sock):
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return
    raise AssertionError(f"bytes meant for a closed connection arrived here: {data!r}")


def test_a_handler_that_closes_its_socket_writes_nothing_into_its_own_sockets(server_class):
    """The handler hangs up, opens a socket pair (which takes the number its
    connection had) and returns a reply: the reply goes nowhere."""
    pairs = []

    class HangUp(MessageRequestHandler):
        def handle_message(self, message):
            self.request.close()
            pairs.append(socket.socketpair())
            return b"private reply of " + message

    server, thread = start(server_class, HangUp)
    try:
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
            client.send_message(b"client 1")
            assert client.recv_message() is None  # hung up, nothing sent
        assert wait_until(lambda: server.stats()["requests_active"] == 0)
        [(near, far)] = pairs
        assert_nothing_to_read(far)
        assert_nothing_to_read(near)
        near.close()
        far.close()
        assert server.errors == []
    finally:
        stop(server, thread)


def test_the_next_client_never_gets_the_reply_of_a_closed_connection():
    """Deterministic: the handler closes its socket, a new client connects
    and is taken by the loop, and only then the handler returns its reply."""
    closed = threading.Event()
    taken = threading.Event()

    class HangUpLate(MessageRequestHandler):
        def handle_message(self, message):
            if message == b"hang up":
                self.request.close()
                closed.set()
                assert taken.wait(IO_TIMEOUT)
                return b"private reply"
            return b"own reply to " + message

    server, thread = start(socketserver_rs.ThreadingTCPServer, HangUpLate)
    try:
        first = MessageClient(server.server_address, timeout=IO_TIMEOUT)
        first.send_message(b"hang up")
        assert closed.wait(IO_TIMEOUT)
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as second:
            # The second connection is the loop's before the reply is made.
            assert second.request(b"one") == b"own reply to one"
            taken.set()
            assert first.recv_message() is None
            first.close()
            assert wait_until(lambda: server.stats()["requests_active"] == 1)
            assert second.request(b"two") == b"own reply to two"
            second.socket.settimeout(0.2)
            with pytest.raises(TimeoutError):
                second.recv_message()
        assert server.errors == []
    finally:
        stop(server, thread)


@pytest.mark.parametrize("event_driven", [True, False], ids=["event-driven", "thread"])
def test_close_connection_sends_the_last_reply_then_hangs_up(server_class, event_driven):
    class Bye(MessageRequestHandler):
        def handle_message(self, message):
            if message == b"bye":
                self.close_connection = True
                return b"goodbye"
            return message

    Bye.event_driven = event_driven
    server, thread = start(server_class, Bye)
    try:
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
            assert client.request(b"hello") == b"hello"
            client.send_message(b"bye")
            client.send_message(b"never answered")
            assert client.recv_message() == b"goodbye"
            assert client.recv_message() is None
        assert wait_until(lambda: server.stats()["requests_active"] == 0)
        assert server.errors == []
    finally:
        stop(server, thread)


@pytest.mark.slow
@pytest.mark.parametrize("event_driven", [True, False], ids=["event-driven", "thread"])
def test_under_load_every_reply_reaches_its_own_client(server_class, event_driven):
    """Clients that hang up mid-reply, are hung up on, stall, half-close and
    reconnect, for a bounded time: every reply a client reads is its own."""

    class Mixed(MessageRequestHandler):
        timeout = 0.5  # a stalled client is closed

        def handle_message(self, message):
            verb, _, token = message.partition(b" ")
            if verb == b"close":
                self.request.close()
                return None if not self.event_driven else b"reply for " + token
            if verb == b"bye":
                self.close_connection = True
            return b"reply for " + token

    Mixed.event_driven = event_driven
    server, thread = start(server_class, Mixed)
    foreign = []
    answered = []
    deadline = time.monotonic() + 5

    def client(worker):
        rng = random.Random(worker)
        n = 0
        while time.monotonic() < deadline:
            n += 1
            token = b"%d-%d" % (worker, n)
            verb = rng.choice(
                [b"echo", b"echo", b"close", b"bye", b"halfclose", b"drop", b"stall", b"big"]
            )
            try:
                with MessageClient(server.server_address, timeout=IO_TIMEOUT) as c:
                    if verb == b"drop":
                        c.send_message(b"echo " + token)
                        continue  # gone before the reply
                    if verb == b"big":
                        # Gone in the middle of a reply larger than the buffers.
                        c.send_message(b"echo " + token + b" " + b"x" * 4_000_000)
                        c.socket.recv(1000)
                        continue
                    if verb == b"stall":
                        c.socket.sendall(b"\x00\x00")  # half a header, then nothing
                        c.socket.recv(1)  # until the server gives up on it
                        continue
                    if verb == b"halfclose":
                        c.send_message(b"echo " + token)
                        c.socket.shutdown(socket.SHUT_WR)
                        verb = b"echo"
                    else:
                        c.send_message(verb + b" " + token)
                    while True:
                        reply = c.recv_message()
                        if reply is None:
                            break
                        if reply != b"reply for " + token:
                            foreign.append(reply[:40])
                        answered.append(token)
                        if verb == b"echo":
                            break
            except OSError:
                pass  # a reset by a closing server end is not a foreign reply

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT + 10)
        assert foreign == []
        # A plain server with a thread per connection serves one at a time,
        # each stalled client holding it for its timeout.
        one_at_a_time = server_class is socketserver_rs.TCPServer and not event_driven
        assert len(answered) > (10 if one_at_a_time else 100)
        assert wait_until(lambda: server.stats()["requests_active"] == 0)
    finally:
        stop(server, thread)
