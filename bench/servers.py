"""The servers under test, one per process, started by bench/run.py.

    python bench/servers.py serve --impl std|rs --server CLASS --handler KIND
    python bench/servers.py uvloop --proto tcp|udp
    python bench/servers.py http --impl std|rs
    python bench/servers.py shutdown --impl std|rs --tries N
    python bench/servers.py framed --model thread|event|event-threading|uvloop|stdlib

The serving commands bind 127.0.0.1 on a free port, print ``PORT <n>`` and
serve until their standard input closes. ``shutdown`` prints one JSON line
with the time each ``server.shutdown()`` took, in seconds.

``--impl std`` imports the standard ``socketserver``; ``--impl rs`` imports
``socketserver_rs`` in its place (for http.server, through
``socketserver_rs.patch()`` before http.server is imported). The handlers are
the same source for both.
"""

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time


def load_module(impl):
    if impl == "rs":
        import socketserver_rs

        return socketserver_rs
    import socketserver

    return socketserver


def exit_when_stdin_closes():
    """The harness stops a server by closing its standard input."""

    def watch():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            sys.stdout.flush()
            os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def announce(port):
    print(f"PORT {port}", flush=True)


def make_handlers(socketserver):
    class LineEcho(socketserver.StreamRequestHandler):
        """Keep-alive and connection-per-request: echo lines until EOF."""

        def handle(self):
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                self.wfile.write(line)

    class LineEchoUnmetered(LineEcho):
        """LineEcho on the core's files without the server's byte counters
        (socketserver_rs only): the stats-off side of bench/stats_overhead.py."""

        def setup(self):
            self.connection = self.request
            self.rfile = socketserver._core.SocketReader(self.connection, self.rbufsize)
            self.wfile = socketserver._core.SocketWriter(self.connection, self.wbufsize)

    class LineHash(socketserver.StreamRequestHandler):
        """Keep-alive with CPU-bound requests: hash each line 2,000 times
        (SHA-256), then echo it. Runs in parallel only without a GIL."""

        def handle(self):
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                for _ in range(2000):
                    hashlib.sha256(line).digest()
                self.wfile.write(line)

    class BulkFiles(socketserver.StreamRequestHandler):
        """Bulk echo through rfile/wfile."""

        def handle(self):
            while True:
                data = self.rfile.read1(65536)
                if not data:
                    return
                self.wfile.write(data)

    class BulkPlain(socketserver.BaseRequestHandler):
        """Bulk echo with plain recv/sendall on the socket."""

        def handle(self):
            sock = self.request
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                sock.sendall(data)

    class StreamLines(socketserver.StreamRequestHandler):
        """Lines streamed through rfile/wfile."""

        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)

    class StreamLinesBigBuffer(StreamLines):
        """StreamLines reading through a 64 KiB buffer."""

        rbufsize = 65536

    class StreamLinesNagle(StreamLines):
        """StreamLines asking for Nagle's algorithm, as the standard module's
        connections have it (ours set TCP_NODELAY unless a handler class
        sets this itself): the small writes are gathered into segments."""

        disable_nagle_algorithm = False

    class DatagramEcho(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            sock.sendto(data, self.client_address)

    return {
        "line": LineEcho,
        "line-unmetered": LineEchoUnmetered,
        "line-hash": LineHash,
        "bulk-files": BulkFiles,
        "bulk-plain": BulkPlain,
        "lines": StreamLines,
        "lines-64k": StreamLinesBigBuffer,
        "lines-nagle": StreamLinesNagle,
        "udp": DatagramEcho,
    }


def serve(args):
    socketserver = load_module(args.impl)
    handler = make_handlers(socketserver)[args.handler]
    server_class = getattr(socketserver, args.server)
    server = server_class(("127.0.0.1", 0), handler)
    exit_when_stdin_closes()
    announce(server.server_address[1])
    server.serve_forever()


def serve_uvloop(args):
    import asyncio

    import uvloop

    class StreamEcho(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class DatagramEcho(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    async def main():
        loop = asyncio.get_running_loop()
        if args.proto == "tcp":
            server = await loop.create_server(StreamEcho, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
        else:
            transport, _ = await loop.create_datagram_endpoint(
                DatagramEcho, local_addr=("127.0.0.1", 0)
            )
            port = transport.get_extra_info("sockname")[1]
        exit_when_stdin_closes()
        announce(port)
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_framed(args):
    """Echo of length-prefixed messages: socketserver_rs's
    MessageRequestHandler in the thread model (``thread``: a
    ThreadingTCPServer, a thread per connection) or event-driven (``event``:
    a TCPServer running handlers on its serving thread; ``event-threading``:
    a ThreadingTCPServer running them on its pool), a uvloop
    asyncio.Protocol decoding the same frames, or the standard module
    (``stdlib``)."""
    import resource

    # Room for the idle-connection runs' thousands of descriptors.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.model == "uvloop":
        return serve_framed_uvloop()
    if args.model == "stdlib":
        return serve_framed_stdlib()
    import socketserver_rs

    class Echo(socketserver_rs.MessageRequestHandler):
        event_driven = args.model != "thread"

        def handle_message(self, message):
            return message

    server_class = (
        socketserver_rs.TCPServer if args.model == "event" else socketserver_rs.ThreadingTCPServer
    )
    server = server_class(("127.0.0.1", 0), Echo)
    exit_when_stdin_closes()
    announce(server.server_address[1])
    server.serve_forever()


def serve_framed_stdlib():
    """The standard module's ThreadingTCPServer echoing the same frames, a
    thread per connection, as its users write it."""
    import socketserver

    class Echo(socketserver.StreamRequestHandler):
        def handle(self):
            while len(header := self.rfile.read(4)) == 4:
                body = self.rfile.read(int.from_bytes(header, "big"))
                self.wfile.write(header + body)

    socketserver.ThreadingTCPServer.daemon_threads = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    exit_when_stdin_closes()
    announce(server.server_address[1])
    server.serve_forever()


def serve_framed_uvloop():
    import asyncio

    import uvloop

    class FramedEcho(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buffer = bytearray()

        def data_received(self, data):
            buffer = self.buffer
            buffer += data
            while len(buffer) >= 4:
                end = 4 + int.from_bytes(buffer[:4], "big")
                if len(buffer) < end:
                    break
                message = bytes(buffer[4:end])
                del buffer[:end]
                self.transport.write(len(message).to_bytes(4, "big") + message)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(FramedEcho, "127.0.0.1", 0)
        exit_when_stdin_closes()
        announce(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_http(args):
    if args.impl == "rs":
        import socketserver_rs

        socketserver_rs.patch()
    import http.server

    class Tiny(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive unless the client says close

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tiny)
    exit_when_stdin_closes()
    announce(server.server_address[1])
    server.serve_forever()


def measure_shutdown(args):
    socketserver = load_module(args.impl)
    handler = make_handlers(socketserver)["line"]
    rng = random.Random(1)
    took = []
    for _ in range(args.tries):
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever)  # default poll_interval
        thread.start()
        time.sleep(rng.uniform(0.01, 0.03))
        began = time.perf_counter()
        server.shutdown()
        took.append(time.perf_counter() - began)
        thread.join()
        server.server_close()
    print(json.dumps({"shutdown_s": took}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve")
    p.add_argument("--impl", choices=["std", "rs"], required=True)
    p.add_argument("--server", required=True)
    p.add_argument(
        "--handler",
        choices=[
            "line",
            "line-unmetered",
            "line-hash",
            "bulk-files",
            "bulk-plain",
            "lines",
            "lines-64k",
            "lines-nagle",
            "udp",
        ],
        required=True,
    )
    p = commands.add_parser("uvloop")
    p.add_argument("--proto", choices=["tcp", "udp"], required=True)
    p = commands.add_parser("framed")
    models = ["thread", "event", "event-threading", "uvloop", "stdlib"]
    p.add_argument("--model", choices=models, required=True)
    p = commands.add_parser("http")
    p.add_argument("--impl", choices=["std", "rs"], required=True)
    p = commands.add_parser("shutdown")
    p.add_argument("--impl", choices=["std", "rs"], required=True)
    p.add_argument("--tries", type=int, default=50)
    args = parser.parse_args()
    run_command = {
        "serve": serve,
        "uvloop": serve_uvloop,
        "framed": serve_framed,
        "http": serve_http,
        "shutdown": measure_shutdown,
    }
    run_command[args.command](args)


if __name__ == "__main__":
    main()
