"""The seven steps of a TCP program, written out, then the same service on
socketserver_rs.

Server: socket() -> bind() -> listen() -> accept() -> recv()/sendall() -> close()
Client: socket() -> connect()             ->          sendall()/recv() -> close()
"""

import errno
import socket
import threading

import socketserver_rs as socketserver


def recv_until_closed(sock):
    """TCP is a byte stream: read until the peer closes, which reads as b""."""
    chunks = []
    while True:
        chunk = sock.recv(4096)  # returns whatever has arrived, 1 to 4096 bytes
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


# --- The server, step by step --------------------------------------------

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # 1. create
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart without waiting
listener.bind(("127.0.0.1", 0))  # 2. bind (port 0: any free port)
listener.listen()  # 3. listen
address = listener.getsockname()


def serve_one():
    conn, client_address = listener.accept()  # 4. accept: a new socket per client
    with conn:
        data = recv_until_closed(conn)  # 5. recv (the client half-closed: done sending)
        print("server received", data)
        conn.sendall(data.upper())  # 5. sendall: send() may send only part
    # 6. close (the with block), the connection; the listener stays open


server_thread = threading.Thread(target=serve_one)
server_thread.start()

# --- The client ----------------------------------------------------------

# connect_ex() returns an error number instead of raising: here, a port
# that is bound but not listening refuses the connection.
with socket.socket() as not_listening:
    not_listening.bind(("127.0.0.1", 0))
    with socket.socket() as probe:
        code = probe.connect_ex(not_listening.getsockname())
        print("connect_ex to a port nobody listens on:", errno.errorcode[code])

client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # 1. create
client.settimeout(5)  # every blocking call below raises TimeoutError after 5 s
client.connect(address)  # 4. connect
print("client", client.getsockname()[0], "-> server", client.getpeername()[0])
print("connected to the bound port:", client.getpeername() == address)

client.setblocking(False)  # a non-blocking recv() raises instead of waiting
try:
    client.recv(1024)
except BlockingIOError:
    print("non-blocking recv with nothing to read: BlockingIOError")
client.settimeout(5)  # blocking again, with a timeout

# Two sends are not two messages: the server may read them as one.
client.sendall(b"hello, ")  # 5. send
client.sendall(b"server")
client.shutdown(socket.SHUT_WR)  # no more to send: the server's recv() returns b""
print("client received", recv_until_closed(client))  # 5. recv
client.close()  # 6. close

server_thread.join()
listener.close()

# --- The same service on socketserver_rs ---------------------------------


class UpperHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.read().upper())  # read() returns at the client's EOF


with socketserver.TCPServer(("127.0.0.1", 0), UpperHandler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.create_connection(server.server_address, timeout=5) as client:
        client.sendall(b"hello again")
        client.shutdown(socket.SHUT_WR)
        print("socketserver_rs replied", recv_until_closed(client))
    server.shutdown()
