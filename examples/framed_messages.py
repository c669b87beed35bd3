"""Length-prefixed messages: each one arrives whole, however TCP splits it."""

import socket
import threading

import socketserver_rs as socketserver


class UpperHandler(socketserver.MessageRequestHandler):
    def handle_message(self, message):  # one whole message, bytes
        return message.upper()  # sent back as one message


with socketserver.ThreadingTCPServer(("127.0.0.1", 0), UpperHandler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()

    with socket.create_connection(server.server_address) as client:
        for message in [b"hello", b"", b"big " * 50_000]:
            socketserver.send_message(client, message)
        for _ in range(3):
            reply = socketserver.recv_message(client)  # None once the server closes
            print(len(reply), reply[:12])  # 5 b'HELLO', 0 b'', 200000 b'BIG BIG BIG '

    server.shutdown()
