"""UDP: sendto()/recvfrom() written out, then a UDPServer with
DatagramRequestHandler.

No listen(), accept() or connection: each datagram travels alone, carries
its sender's address, and arrives whole or not at all, so its boundaries
are kept (two sends are two receives) and no length prefix is needed.
"""

import socket
import threading

import socketserver_rs as socketserver

# --- By hand --------------------------------------------------------------

server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # create
server.bind(("127.0.0.1", 0))  # bind: the address clients send to
server.settimeout(5)

client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.settimeout(5)  # a lost datagram is never resent: do not wait forever
client.sendto(b"first", server.getsockname())  # no connect() needed
client.sendto(b"second", server.getsockname())

for _ in range(2):
    data, sender = server.recvfrom(1024)  # one datagram and who sent it
    print("server got", data, "from the client's port:", sender[1] == client.getsockname()[1])
    server.sendto(data.upper(), sender)  # the reply goes back to that address

print("client got", client.recvfrom(1024)[0], "and", client.recvfrom(1024)[0])
client.close()
server.close()

# --- On socketserver_rs ---------------------------------------------------


class UpperHandler(socketserver.DatagramRequestHandler):
    def handle(self):
        data = self.rfile.read()  # the whole datagram, up to max_packet_size bytes
        self.wfile.write(b"%d bytes: " % len(data) + data[:5].upper())
        # the reply is sent to the client when handle() returns


with socketserver.UDPServer(("127.0.0.1", 0), UpperHandler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(b"hello", server.server_address)
        print("UDPServer replied", client.recv(1024))
        # A datagram longer than max_packet_size (8192) is cut, silently.
        client.sendto(b"x" * 10000, server.server_address)
        print("a 10000-byte datagram:", client.recv(1024))
    server.shutdown()


class BigDatagramServer(socketserver.UDPServer):
    max_packet_size = 65507  # the largest UDP payload over IPv4


with BigDatagramServer(("127.0.0.1", 0), UpperHandler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(b"x" * 10000, server.server_address)
        print("with max_packet_size = 65507:", client.recv(1024))
    server.shutdown()
