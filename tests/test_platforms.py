"""Other platforms, simulated on this one: in a fresh interpreter whose
`os`, `socket`, `select` and `signal` lack what Windows (or another
platform without fork or Unix sockets) lacks, the package offers what the
standard module offers there; and the portable readiness backend, which
SOCKETSERVER_RS_POLLER=poll selects, is the one in use."""

import os
import subprocess
import sys
import textwrap

import pytest

WITHOUT = {
    "fork": "for name in ('fork', 'register_at_fork'):\n    delattr(os, name)\n",
    "AF_UNIX": "for name in ('AF_UNIX', 'SO_REUSEPORT'):\n    delattr(socket, name)\n",
    "poll": "del select.poll\n",
    "signals": (
        "for name in ('SIGQUIT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU', 'SIGCHLD', 'SIGKILL'):\n"
        "    delattr(signal, name)\n"
    ),
}
WINDOWS = tuple(WITHOUT)


def run(code, lacking=(), env=None):
    """Run `code` in a fresh interpreter whose modules lack `lacking`, with
    `env` over the environment (None: unset); its stdout, or the failure
    with its stderr."""
    environ = dict(os.environ)
    for name, value in (env or {}).items():
        environ.pop(name, None)
        if value is not None:
            environ[name] = value
    prelude = "import os, select, signal, socket, sys\n" + "".join(
        WITHOUT[what] for what in lacking
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


NAMES = """
import socketserver, socketserver_rs
std, ours = set(socketserver.__all__), set(socketserver_rs.__all__)
# 3.12 added the ForkingUnix servers; ours has them on every version.
forking_unix = {"ForkingUnixStreamServer", "ForkingUnixDatagramServer"}
if hasattr(os, "fork") and hasattr(socket, "AF_UNIX"):
    std |= forking_unix
assert ours == std, (sorted(ours - std), sorted(std - ours))
every = std | forking_unix | {"ForkingMixIn", "ForkingTCPServer", "UnixStreamServer"}
for name in sorted(every):
    assert hasattr(socketserver_rs, name) == (name in std), name
print(len(ours))
"""


@pytest.mark.parametrize(
    "lacking", [("fork",), ("AF_UNIX",), WINDOWS], ids=["no-fork", "no-AF_UNIX", "windows"]
)
def test_public_names_are_the_standard_modules_there(lacking):
    assert int(run(NAMES, lacking)) >= 9


def test_listening_sockets_get_no_reuseaddr_on_windows_as_in_the_standard_module():
    # Windows' SO_REUSEADDR lets another socket take a port in use: neither
    # the standard module nor asyncio sets it there unless asked.
    code = """
    import socketserver, socketserver_rs
    os.name = "nt"
    for module in (socketserver, socketserver_rs):
        with module.TCPServer(("127.0.0.1", 0), module.BaseRequestHandler) as server:
            print(server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))
        class Asked(module.TCPServer):
            allow_reuse_address = True
        with Asked(("127.0.0.1", 0), module.BaseRequestHandler) as server:
            print(server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0)
    """
    assert run(code, WINDOWS).split() == ["0", "True", "0", "True"]


def test_prefork_is_not_offered_without_fork():
    code = """
    try:
        import socketserver_rs.prefork
    except ImportError as err:
        print(err)
    """
    assert "os.fork()" in run(code, WINDOWS)


SERVE_ONE_MESSAGE = """
import threading
import socketserver_rs

class Echo(socketserver_rs.MessageRequestHandler):
    def handle_message(self, message):
        return message

with socketserver_rs.TCPServer(("127.0.0.1", 0), Echo) as server:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        with socketserver_rs.MessageClient(server.server_address, timeout=10) as client:
            assert client.request(b"ping") == b"ping"
            kinds = set()
            for fd in os.listdir("/proc/self/fd"):
                try:
                    kinds.add(os.readlink(f"/proc/self/fd/{fd}"))
                except FileNotFoundError:  # listdir's own descriptor
                    pass
            print("epoll" if "anon_inode:[eventpoll]" in kinds else "no epoll")
    finally:
        server.shutdown()
        thread.join(10)
"""


@pytest.mark.parametrize("setting, backend", [(None, "epoll"), ("poll", "no epoll")])
def test_the_readiness_backend_is_the_one_the_environment_asks_for(setting, backend):
    env = {"SOCKETSERVER_RS_POLLER": setting}
    assert run(SERVE_ONE_MESSAGE, env=env).split("\n")[0] == backend


def test_an_unknown_backend_is_refused_clearly():
    code = """
    import threading
    import socketserver_rs
    class Echo(socketserver_rs.MessageRequestHandler):
        def handle_message(self, message):
            return message
    with socketserver_rs.TCPServer(("127.0.0.1", 0), Echo) as server:
        bound = threading.Timer(10, server.shutdown)  # only if the setting were ignored
        bound.daemon = True
        bound.start()
        try:
            server.serve_forever()
        except OSError as err:
            print(type(err).__name__, err)
    """
    out = run(code, env={"SOCKETSERVER_RS_POLLER": "kqueue"})
    assert "SOCKETSERVER_RS_POLLER" in out and "'kqueue'" in out, out
