"""Servers built on socketserver (the standard library's, werkzeug's
development server, dnslib's DNS server, prometheus_client's exporter, the
documentation's examples) run on the Rust core after socketserver_rs.patch(),
each in a fresh interpreter; where a program runs unchanged on the standard
module too, both runs must print the same. Then the socket tutorial's
points, observed inside handlers on both modules."""

import errno
import hashlib
import pathlib
import re
import socket
import struct
import subprocess
import sys
import textwrap

import pytest
from conftest import IO_TIMEOUT, address_for

DATA = pathlib.Path(__file__).resolve().parent / "data"

PRELUDE = """
import socketserver_rs
socketserver_rs.patch()
import socketserver
assert socketserver is socketserver_rs
import threading
"""

HTTP_SERVER = """
import http.client, http.server, os, tempfile
assert http.server.HTTPServer.__mro__[1] is socketserver_rs.TCPServer
root = tempfile.mkdtemp()
with open(os.path.join(root, "hello.txt"), "wb") as f:
    f.write(b"hello from disk")

class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)
    def log_message(self, *args):
        pass

with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as httpd:
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    conn = http.client.HTTPConnection(*httpd.server_address[:2], timeout=10)
    for _ in range(3):  # keep-alive: three requests on one connection
        conn.request("GET", "/hello.txt")
        response = conn.getresponse()
        assert response.status == 200, response.status
        assert response.read() == b"hello from disk"
    conn.request("GET", "/missing")
    response = conn.getresponse()
    assert response.status == 404
    response.read()
    conn.close()
    httpd.shutdown()
print("served")
"""

XMLRPC_SERVER = """
import xmlrpc.client, xmlrpc.server
from xmlrpc.server import SimpleXMLRPCRequestHandler

class Quiet(SimpleXMLRPCRequestHandler):
    def log_message(self, *args):
        pass

with xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), requestHandler=Quiet) as server:
    assert isinstance(server, socketserver_rs.TCPServer)
    server.register_function(lambda a, b: a + b, "add")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    proxy = xmlrpc.client.ServerProxy(f"http://{host}:{port}/")
    assert proxy.add(2, 3) == 5
    assert proxy.add("a", "b") == "ab"
    server.shutdown()
print("served")
"""

WSGIREF_SERVER = """
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

def app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"got " + body]

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

with make_server("127.0.0.1", 0, app, handler_class=Quiet) as httpd:
    assert isinstance(httpd, socketserver_rs.TCPServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/" % httpd.server_address[1]
    with urllib.request.urlopen(url, data=b"payload", timeout=10) as response:
        assert response.read() == b"got payload"
    httpd.shutdown()
print("served")
"""

LOGGING_LISTEN = """
import json, logging, logging.config, socket, struct
listener = logging.config.listen(0)
listener.start()
listener.ready.wait(10)
config = {"version": 1, "loggers": {"from-socket": {"level": "WARNING"}}}
payload = json.dumps(config).encode()
with socket.create_connection(("localhost", listener.port), timeout=10) as client:
    client.sendall(struct.pack(">L", len(payload)) + payload)
deadline = __import__("time").monotonic() + 10
while logging.getLogger("from-socket").level != logging.WARNING:
    assert __import__("time").monotonic() < deadline, "configuration never applied"
    __import__("time").sleep(0.01)
logging.config.stopListening()
listener.join(10)
assert not listener.is_alive()
print("served")
"""


WERKZEUG = """
import urllib.request
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

@Request.application
def app(request):
    return Response("hello " + request.args.get("name", ""))

class Quiet(WSGIRequestHandler):
    def log(self, *args):
        pass

for threaded, processes in ((True, 1), (False, 1), (False, 2)):
    server = make_server(
        "127.0.0.1", 0, app, threaded=threaded, processes=processes, request_handler=Quiet
    )
    assert isinstance(server, socketserver_rs.TCPServer)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    for name in ("a", "b", "c"):
        url = "http://127.0.0.1:%d/?name=%s" % (server.server_port, name)
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == ("hello " + name).encode()
    server.shutdown()
    serving.join(10)
    assert not serving.is_alive()
print("served")
"""

DNSLIB = """
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

class Resolver(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("10.1.2.3"), ttl=60))
        return reply

quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")
for tcp in (False, True):
    dns = DNSServer(Resolver(), port=0, address="127.0.0.1", tcp=tcp, logger=quiet)
    assert isinstance(dns.server, socketserver_rs.ThreadingMixIn)
    dns.start_thread()
    port = dns.server.server_address[1]
    question = DNSRecord.question("example.com")
    answer = DNSRecord.parse(question.send("127.0.0.1", port, tcp=tcp, timeout=10))
    assert str(answer.rr[0].rdata) == "10.1.2.3"
    dns.stop()
print("served")
"""


@pytest.mark.parametrize(
    "program",
    [HTTP_SERVER, XMLRPC_SERVER, WSGIREF_SERVER, LOGGING_LISTEN, WERKZEUG, DNSLIB],
    ids=["http.server", "xmlrpc.server", "wsgiref", "logging.config.listen", "werkzeug", "dnslib"],
)
def test_stdlib_server_runs_on_the_core(program):
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(program)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "served"


def test_patch_after_http_server_warns():
    code = "import http.server, socketserver_rs, warnings\nsocketserver_rs.patch()\n"
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "http.server" in result.stderr and "RuntimeWarning" in result.stderr


# -- programs run on both modules ---------------------------------------------

ON_OURS = """
import socketserver_rs
socketserver_rs.patch()
import socketserver
assert socketserver is socketserver_rs
"""
ON_OURS_CHECK = """
import sys
assert not [m for m in list(sys.modules.values()) if getattr(m, "__name__", "") == "socketserver"]
"""
ON_STANDARD = """
import socketserver
"""
ON_STANDARD_CHECK = """
import sys
assert "socketserver_rs" not in sys.modules
"""

HTTPS_SERVER = """
import http.client, http.server, os, socket, ssl, sys, tempfile, threading
cert, key = (os.path.join(sys.argv[1], name) for name in ("localhost.crt", "localhost.key"))
root = tempfile.mkdtemp()
with open(os.path.join(root, "hello.txt"), "wb") as f:
    f.write(b"hello over TLS")
connections = []

class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)
    def setup(self):
        super().setup()
        connections.append((self.client_address, self.request.version()))
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
serving = threading.Thread(target=httpd.serve_forever, daemon=True)
serving.start()
with socket.create_connection(("127.0.0.1", httpd.server_port), timeout=10) as plain:
    plain.sendall(b"GET /hello.txt HTTP/1.0\\r\\n\\r\\n")
    try:
        while plain.recv(4096):
            pass
    except ConnectionResetError:
        pass
print("a client speaking plain HTTP gets no reply")
trusting = ssl.create_default_context(cafile=cert)
conn = http.client.HTTPSConnection("127.0.0.1", httpd.server_port, timeout=10, context=trusting)
requests = [
    ("GET", "/hello.txt", None),
    ("POST", "/echo", b"posted " * 20000),
    ("GET", "/hello.txt", None),
    ("POST", "/echo", b"again"),
    ("GET", "/missing", None),
]
for method, path, body in requests:
    conn.request(method, path, body=body)
    response = conn.getresponse()
    data = response.read()
    print(method, path, response.status, len(data), data[:20], response.will_close)
    if conn.sock is not None:
        client_port = conn.sock.getsockname()[1]
conn.close()
httpd.shutdown()
serving.join(10)
httpd.server_close()
print(not serving.is_alive(), [(port == client_port, v) for (_, port), v in connections])
print("served")
"""

PROMETHEUS = """
import os, ssl, sys, urllib.request
import prometheus_client
cert, key = (os.path.join(sys.argv[1], name) for name in ("localhost.crt", "localhost.key"))
requests = prometheus_client.Counter("handled_requests", "Requests handled")
requests.inc(3)
for addr, host, scheme in [
    ("127.0.0.1", "127.0.0.1", "http"),
    ("::1", "[::1]", "http"),
    ("127.0.0.1", "127.0.0.1", "https"),
]:
    tls = {"certfile": cert, "keyfile": key} if scheme == "https" else {}
    server, thread = prometheus_client.start_http_server(0, addr=addr, **tls)
    print(isinstance(server, socketserver.ThreadingMixIn), server.socket.family)
    url = "%s://%s:%d/metrics" % (scheme, host, server.server_port)
    trusting = ssl.create_default_context(cafile=cert) if tls else None
    for _ in range(2):
        with urllib.request.urlopen(url, timeout=10, context=trusting) as response:
            lines = response.read().decode().splitlines()
        print(response.status, [line for line in lines if line.startswith("handled_requests_t")])
        requests.inc()
    server.shutdown()
    server.server_close()
    thread.join(10)
    print(thread.is_alive())
print("served")
"""

DOCS_CLIENT = """
import socket, threading

def client(data, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(("localhost", port))
        sock.sendall(bytes(data + "\\n", "utf-8"))
        received = str(sock.recv(1024), "utf-8")
    print("Sent:     {}".format(data))
    print("Received: {}".format(received))

def serve(server, *messages):
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    for message in messages:
        client(message, server.server_address[1])
    server.shutdown()
    serving.join(10)
"""

DOCS_TCP = """
class MyTCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        # self.request is the TCP socket connected to the client
        self.data = self.request.recv(1024).strip()
        print("{} wrote:".format(self.client_address[0]))
        print(self.data)
        # just send back the same data, but upper-cased
        self.request.sendall(self.data.upper())

with socketserver.TCPServer(("localhost", 0), MyTCPHandler) as server:
    serve(server, "hello world", "and again")
print("served")
"""

DOCS_STREAM = """
class MyTCPHandler(socketserver.StreamRequestHandler):
    def handle(self):
        # self.rfile is a file-like object created by the handler;
        # we can now use e.g. readline() instead of raw recv() calls
        self.data = self.rfile.readline().strip()
        print("{} wrote:".format(self.client_address[0]))
        print(self.data)
        # Likewise, self.wfile is a file-like object used to write back
        # to the client
        self.wfile.write(self.data.upper())

with socketserver.TCPServer(("localhost", 0), MyTCPHandler) as server:
    serve(server, "hello world", "and again")
print("served")
"""

DOCS_UDP = """
import socket, threading

class MyUDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data = self.request[0].strip()
        socket = self.request[1]
        print("{} wrote:".format(self.client_address[0]))
        print(data)
        socket.sendto(data.upper(), self.client_address)

with socketserver.UDPServer(("localhost", 0), MyUDPHandler) as server:
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    for data in ("hello world", "and again"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(10)
        sock.sendto(bytes(data + "\\n", "utf-8"), ("localhost", server.server_address[1]))
        received = str(sock.recv(1024), "utf-8")
        sock.close()
        print("Sent:     {}".format(data))
        print("Received: {}".format(received))
    server.shutdown()
    serving.join(10)
print("served")
"""

DOCS_ASYNC_MIXINS = """
import socket
import threading

class ThreadedTCPRequestHandler(socketserver.BaseRequestHandler):

    def handle(self):
        data = str(self.request.recv(1024), 'ascii')
        cur_thread = threading.current_thread()
        response = bytes("{}: {}".format(cur_thread.name, data), 'ascii')
        self.request.sendall(response)

class ThreadedTCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    pass

def client(ip, port, message):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect((ip, port))
        sock.sendall(bytes(message, 'ascii'))
        response = str(sock.recv(1024), 'ascii')
        print("Received: {}".format(response))

# Port 0 means to select an arbitrary unused port
HOST, PORT = "localhost", 0

server = ThreadedTCPServer((HOST, PORT), ThreadedTCPRequestHandler)
with server:
    ip, port = server.server_address

    # Start a thread with the server -- that thread will then start one
    # more thread for each request
    server_thread = threading.Thread(target=server.serve_forever)
    # Exit the server thread when the main thread terminates
    server_thread.daemon = True
    server_thread.start()
    print("Server loop running in thread:", server_thread.name)

    client(ip, port, "Hello World 1")
    client(ip, port, "Hello World 2")
    client(ip, port, "Hello World 3")

    server.shutdown()
print("served")
"""

LOGGING_RECEIVER = """
import logging, logging.handlers, pickle, struct, threading

class LogRecordStreamHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            chunk = self.connection.recv(4)
            if len(chunk) < 4:
                break
            slen = struct.unpack('>L', chunk)[0]
            chunk = self.connection.recv(slen)
            while len(chunk) < slen:
                chunk = chunk + self.connection.recv(slen - len(chunk))
            obj = self.unPickle(chunk)
            record = logging.makeLogRecord(obj)
            self.handleLogRecord(record)

    def unPickle(self, data):
        return pickle.loads(data)

    def handleLogRecord(self, record):
        if self.server.logname is not None:
            name = self.server.logname
        else:
            name = record.name
        logger = logging.getLogger(name)
        logger.handle(record)

class LogRecordSocketReceiver(socketserver.ThreadingTCPServer):
    allow_reuse_address = True

    def __init__(self, host='localhost',
                 port=logging.handlers.DEFAULT_TCP_LOGGING_PORT,
                 handler=LogRecordStreamHandler):
        socketserver.ThreadingTCPServer.__init__(self, (host, port), handler)
        self.abort = 0
        self.timeout = 1
        self.logname = None

    def serve_until_stopped(self):
        import select
        abort = 0
        while not abort:
            rd, wr, ex = select.select([self.socket.fileno()],
                                       [], [],
                                       self.timeout)
            if rd:
                self.handle_request()
            abort = self.abort

messages = ["small", "x" * 100_000, "%d items", "y" * 300_000, "last"]
received = []
all_received = threading.Event()

class Collect(logging.Handler):
    def emit(self, record):
        received.append(record)
        if len(received) == len(messages):
            all_received.set()

logging.getLogger("received").addHandler(Collect())
logging.getLogger("received").propagate = False
tcpserver = LogRecordSocketReceiver(host="127.0.0.1", port=0)
tcpserver.logname = "received"
print('About to start TCP server...')
receiving = threading.Thread(target=tcpserver.serve_until_stopped, daemon=True)
receiving.start()

sender = logging.getLogger("sender")
sender.propagate = False
sender.setLevel(logging.DEBUG)
socket_handler = logging.handlers.SocketHandler("127.0.0.1", tcpserver.server_address[1])
sender.addHandler(socket_handler)
for level, message in zip((10, 20, 30, 40, 50), messages):
    sender.log(level, message, *((7,) if "%" in message else ()))
print(all_received.wait(10))
sender.removeHandler(socket_handler)
socket_handler.close()
tcpserver.abort = 1
receiving.join(10)
tcpserver.server_close()
print(receiving.is_alive())
for record in received:
    message = record.getMessage()
    print(record.name, record.levelname, len(message), message[:10])
print("served")
"""

SERVER_THREAD_NAME = re.compile(r"^Received: (.+): (Hello World \d)$", re.M)


def without_handler_thread_names(output):
    """The output with each reply's handler thread name replaced, after
    checking it names neither the main thread nor the server loop's."""
    loop = re.search(r"^Server loop running in thread: (.+)$", output, re.M).group(1)
    names = SERVER_THREAD_NAME.findall(output)
    assert len(names) == 3, output
    for name, _ in names:
        assert name not in ("MainThread", loop), output
    return SERVER_THREAD_NAME.sub(r"Received: <thread>: \2", output)


def run_on(module, program, *args):
    if module == "socketserver_rs":
        code = ON_OURS + program + ON_OURS_CHECK
    else:
        code = ON_STANDARD + program + ON_STANDARD_CHECK
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"on {module}:\n{result.stderr}"
    return result.stdout, result.stderr


COMPARED = {
    "https": (HTTPS_SERVER, None),
    "prometheus_client": (PROMETHEUS, None),
    "docs-tcp": (DOCS_CLIENT + DOCS_TCP, None),
    "docs-stream": (DOCS_CLIENT + DOCS_STREAM, None),
    "docs-udp": (DOCS_UDP, None),
    "docs-async-mixins": (DOCS_ASYNC_MIXINS, without_handler_thread_names),
    "logging-cookbook-receiver": (LOGGING_RECEIVER, None),
}


@pytest.mark.parametrize("case", sorted(COMPARED))
def test_program_prints_the_same_on_both_modules(case):
    program, normalize = COMPARED[case]
    ours, our_errors = run_on("socketserver_rs", program, str(DATA))
    theirs, their_errors = run_on("socketserver", program, str(DATA))
    assert theirs.splitlines()[-1] == "served", theirs
    if normalize is not None:
        ours, theirs = normalize(ours), normalize(theirs)
    assert ours == theirs
    assert our_errors == their_errors == ""


# -- the socket tutorial's points, inside handlers -----------------------------

PAYLOAD = bytes(range(256)) * 16384 + b"tail"  # 4 MiB and a few bytes


def recv_exactly(sock, size):
    """The socket tutorial's receive loop: size bytes, or fewer at EOF."""
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def outcome(call, *args):
    """What a call returned, or the class of the OSError it raised."""
    try:
        return call(*args)
    except OSError as exc:
        return type(exc)


def tutorial_class(variant, name, family):
    cls = getattr(variant.mod, name)
    if family != cls.address_family:
        cls = type(name, (cls,), {"address_family": family})
    return variant.server_class(cls)


def tutorial_client(server, kind):
    sock = socket.socket(server.address_family, kind)
    sock.settimeout(IO_TIMEOUT)
    return sock


STREAM_SERVERS = [
    ("TCPServer", socket.AF_INET),
    ("ThreadingTCPServer", socket.AF_INET),
    ("TCPServer", socket.AF_INET6),
    ("UnixStreamServer", socket.AF_UNIX),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "name, family", STREAM_SERVERS, ids=["tcp", "threading-tcp", "tcp-ipv6", "unix-stream"]
)
def test_socket_tutorial_in_a_stream_handler(variant, name, family, runner, unix_path):
    seen = {}

    class Observer(variant.mod.BaseRequestHandler):
        def handle(self):
            sock = self.request
            seen["getpeername() == client_address"] = sock.getpeername() == self.client_address
            seen["getsockname() == server_address"] = (
                sock.getsockname() == self.server.server_address
            )
            seen["timeout at first"] = sock.gettimeout()
            sock.settimeout(0.05)
            seen["recv from a silent peer, settimeout"] = outcome(sock.recv, 1)
            sock.setblocking(False)
            seen["recv from a silent peer, setblocking(False)"] = outcome(sock.recv, 1)
            sock.settimeout(IO_TIMEOUT)
            sock.sendall(b"go")
            (size,) = struct.unpack(">I", recv_exactly(sock, 4))
            payload = recv_exactly(sock, size)
            seen["payload"] = size, hashlib.sha256(payload).hexdigest()
            sock.sendall(struct.pack(">I", len(payload)))
            seen["recv after the peer closed"] = sock.recv(1)

    cls = tutorial_class(variant, name, family)
    server = runner.track(cls(address_for(cls, unix_path), Observer))
    variant.check_path(server)
    serving = runner.start(server)
    address = server.server_address
    with tutorial_client(server, socket.SOCK_STREAM) as client:
        assert client.connect_ex(address) == 0
        assert recv_exactly(client, 2) == b"go"
        client.sendall(struct.pack(">I", len(PAYLOAD)) + PAYLOAD)
        assert struct.unpack(">I", recv_exactly(client, 4)) == (len(PAYLOAD),)
        client.shutdown(socket.SHUT_WR)
        assert client.recv(1) == b""
    assert seen == {
        "getpeername() == client_address": True,
        "getsockname() == server_address": True,
        "timeout at first": None,
        "recv from a silent peer, settimeout": socket.timeout,
        "recv from a silent peer, setblocking(False)": BlockingIOError,
        "payload": (len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest()),
        "recv after the peer closed": b"",
    }
    assert serving.stop()
    server.server_close()
    with tutorial_client(server, socket.SOCK_STREAM) as late:
        assert late.connect_ex(address) == errno.ECONNREFUSED


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "name, family",
    [("UDPServer", socket.AF_INET), ("ThreadingUDPServer", socket.AF_INET6)],
    ids=["udp", "threading-udp-ipv6"],
)
def test_socket_tutorial_in_a_datagram_handler(variant, name, family, runner):
    seen = []

    class Upper(variant.mod.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            at_server_address = sock.getsockname() == self.server.server_address
            seen.append((len(data), self.client_address, at_server_address))
            sock.sendto(data.upper(), self.client_address)

    cls = tutorial_class(variant, name, family)
    server = runner.track(cls(address_for(cls, None), Upper))
    variant.check_path(server)
    runner.start(server)
    with tutorial_client(server, socket.SOCK_DGRAM) as client:
        client.bind(address_for(cls, None))
        replies = []
        for datagram in (b"ping", b"x" * 10000):  # longer than max_packet_size
            client.sendto(datagram, server.server_address)
            replies.append(client.recvfrom(65536))
        me = client.getsockname()
    assert replies == [(b"PING", server.server_address), (b"X" * 8192, server.server_address)]
    assert seen == [(4, me, True), (8192, me, True)]
