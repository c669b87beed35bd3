"""Command line: ``python -m socketserver_rs echo [--udp] [--bind ADDR] [port]``.

Runs a threaded echo server on the Rust core, prints where it listens, and
stops cleanly on Ctrl-C.
"""

import argparse
import socket
import sys

import socketserver_rs as socketserver

DEFAULT_PORT = 9000


class EchoStreamHandler(socketserver.StreamRequestHandler):
    """Sends back every byte it receives until the client closes."""

    def handle(self):
        while True:
            data = self.rfile.read1(65536)
            if not data:
                return
            self.wfile.write(data)


class EchoDatagramHandler(socketserver.BaseRequestHandler):
    """Sends each datagram back to where it came from."""

    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


def make_echo_server(host, port, udp=False):
    """A threaded TCP (or UDP) echo server bound to (host, port)."""
    base = socketserver.ThreadingUDPServer if udp else socketserver.ThreadingTCPServer
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class EchoServer(base):
        address_family = family
        allow_reuse_address = True
        # Ctrl-C must not wait for clients that keep their connection open.
        daemon_threads = True
        block_on_close = False

    handler = EchoDatagramHandler if udp else EchoStreamHandler
    return EchoServer((host, port), handler)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m socketserver_rs",
        description="Servers on the socketserver_rs core.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    echo = commands.add_parser("echo", help="run a threaded echo server")
    echo.add_argument("--udp", action="store_true", help="echo UDP datagrams instead of TCP")
    echo.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on (default: 127.0.0.1; '::' or '0.0.0.0' for all)",
    )
    echo.add_argument(
        "port",
        nargs="?",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default: {DEFAULT_PORT}; 0 picks a free one)",
    )
    args = parser.parse_args(argv)

    try:
        server = make_echo_server(args.bind, args.port, args.udp)
    except OSError as err:
        parser.exit(1, f"cannot listen on {args.bind} port {args.port}: {err}\n")
    with server:
        host, port = server.server_address[:2]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        kind = "UDP" if args.udp else "TCP"
        print(f"Echo server ({kind}) listening on {where} - press Ctrl-C to stop", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("\nKeyboard interrupt received, stopping.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
