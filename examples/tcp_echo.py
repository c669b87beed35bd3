"""A TCP echo server and its client."""

import socket
import threading

import socketserver_rs as socketserver


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:  # one line at a time, until the client closes
            self.wfile.write(line)


with socketserver.ThreadingTCPServer(("127.0.0.1", 0), EchoHandler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()

    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"hello\n")
        reply = b""
        while not reply.endswith(b"\n"):  # a reply may arrive in pieces
            chunk = client.recv(1024)
            if not chunk:
                break
            reply += chunk
        print(reply)  # b'hello\n'

    server.shutdown()  # returns within milliseconds
