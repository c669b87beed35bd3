"""A UDP server and its client."""

import socket
import threading

import socketserver_rs as socketserver


class UpperHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data.upper(), self.client_address)


with socketserver.UDPServer(("127.0.0.1", 0), UpperHandler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(b"ping", server.server_address)
        print(client.recvfrom(1024))  # (b'PING', ('127.0.0.1', <port>))

    server.shutdown()
