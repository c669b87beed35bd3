"""Command line: ``python -m socketserver_rs {echo,http,run} ...``.

- ``echo [--udp] [-b ADDR] [port]``: a threaded echo server on the core.
- ``http [port] [-b ADDR] [-d DIR] ...``: ``python -m http.server`` of the
  running interpreter, with every option it has, on the core.
- ``run script.py [args...]`` / ``run -m module [args...]``: an unmodified
  program with ``socketserver`` resolving to socketserver_rs.
"""

import argparse
import contextlib
import os
import runpy
import socket
import sys
import traceback

import socketserver_rs as socketserver
from socketserver_rs._core import __version__

PROG = "python -m socketserver_rs"
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


def port_number(text):
    """argparse type: a TCP/UDP port, 0-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {port}")
    return port


def run_echo(args, parser):
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


@contextlib.contextmanager
def _http_command_line(prog, parsed):
    """Inside: http.server's parser calls itself `prog`, and a port out of
    range is a usage error (http.server's own parser takes any int, and the
    bind() that follows ends in a traceback). The arguments it parses are
    appended to `parsed`."""
    parse_args = argparse.ArgumentParser.parse_args

    def checked(self, args=None, namespace=None):
        self.prog = prog
        result = parse_args(self, args, namespace)
        port = getattr(result, "port", None)
        if isinstance(port, int) and not 0 <= port <= 65535:
            self.error(f"argument port: port must be 0-65535, not {port}")
        parsed.append(result)
        return result

    argparse.ArgumentParser.parse_args = checked
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = parse_args


def _while_serving(traceback_):
    serve_forever = socketserver.BaseServer.serve_forever.__code__
    return any(frame.f_code is serve_forever for frame, _ in traceback.walk_tb(traceback_))


def run_http(http_args):
    """`python -m http.server` of this interpreter, on the core. A server
    that cannot be set up (its port in use, say) is one line, as for echo."""
    socketserver.patch()
    sys.argv[1:] = http_args
    parsed = []
    prog = f"{PROG} http"
    try:
        with _http_command_line(prog, parsed):
            runpy.run_module("http.server", run_name="__main__", alter_sys=True)
    except OSError as err:
        if not parsed or _while_serving(err.__traceback__):
            raise
        args = parsed[-1]
        where = f"{args.bind} port {args.port}" if args.bind else f"port {args.port}"
        sys.exit(f"cannot listen on {where}: {err}")
    return 0


def run_program(target, args, module):
    """Run a script (or a module, as -m does) with socketserver resolving
    to socketserver_rs, as `python -m cProfile` runs one: same sys.argv,
    __main__ and sys.path[0]; its exit status is ours."""
    socketserver.patch()
    if module:
        sys.argv[:] = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
        return 0
    sys.argv[:] = [target, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(target))
    runpy.run_path(target, run_name="__main__")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Servers and programs on the socketserver_rs core.",
    )
    parser.add_argument("--version", action="version", version=f"socketserver_rs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    echo = commands.add_parser(
        "echo", help="run a threaded echo server", description="A threaded echo server."
    )
    echo.add_argument("--udp", action="store_true", help="echo UDP datagrams instead of TCP")
    echo.add_argument(
        "-b",
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on (default: 127.0.0.1; '::' or '0.0.0.0' for all)",
    )
    echo.add_argument(
        "port",
        nargs="?",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port to listen on (default: {DEFAULT_PORT}; 0 picks a free one)",
    )

    # http and run hand their arguments on as they are (see main()); these
    # entries give the help text.
    commands.add_parser(
        "http",
        help="python -m http.server, with all its options, on the core",
        description="Runs this interpreter's http.server command line on the core; "
        f"`{PROG} http --help` lists its options.",
    )
    run = commands.add_parser(
        "run",
        help="run a program (script or -m module) with socketserver replaced",
        usage=f"{PROG} run [-h] (script.py | -m module) [args ...]",
        description="Runs an unmodified program with `import socketserver` resolving to "
        "socketserver_rs, as `python -m cProfile` runs one: the same sys.argv, "
        "__main__, sys.path[0] and exit status.",
    )
    return parser, run


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, run = build_parser()
    if argv[:1] == ["http"]:
        return run_http(argv[1:])
    if argv[:1] == ["run"]:
        rest = argv[1:]
        if rest[:1] in (["-h"], ["--help"]):
            run.print_help()
            return 0
        if rest[:1] == ["-m"]:
            if len(rest) < 2:
                run.error("-m needs a module name")
            return run_program(rest[1], rest[2:], module=True)
        if not rest or rest[0].startswith("-"):
            run.error("give a script, or -m and a module")
        return run_program(rest[0], rest[1:], module=False)
    args = parser.parse_args(argv)
    return run_echo(args, parser)


if __name__ == "__main__":
    sys.exit(main())
