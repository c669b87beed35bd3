"""Length-prefixed messages: each one arrives whole, however TCP splits it."""

import threading

import socketserver_rs as socketserver


class UpperHandler(socketserver.MessageRequestHandler):
    max_message_size = 1024 * 1024  # refuse longer messages (default 16 MiB)

    def handle_message(self, message: bytes) -> bytes:  # one whole message
        return message.upper()  # sent back as one message


with socketserver.ThreadingTCPServer(("127.0.0.1", 0), UpperHandler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()

    with socketserver.MessageClient(server.server_address, timeout=5) as client:
        print(client.request(b"hello"))  # b'HELLO'
        for message in [b"", b"big " * 50_000]:  # sent back to back, no waiting
            client.send_message(message)
        for _ in range(2):
            reply = client.recv_message()  # None once the server closes
            assert reply is not None
            print(len(reply), reply[:12])  # 0 b'', then 200000 b'BIG BIG BIG '

    server.shutdown()
