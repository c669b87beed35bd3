"""A chat server: every line a client sends goes to every connected client.

One thread per client (ThreadingTCPServer); the set of connected clients is
shared between those threads, so a lock guards it. A client that leaves,
or whose connection fails, is removed. Three clients in this program show
the broadcast.
"""

import socket
import threading

import socketserver_rs as socketserver


class ChatServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, address):
        super().__init__(address, ChatHandler)
        self.clients = set()  # the wfile of each connected client
        self.lock = threading.Lock()

    def broadcast(self, text):
        line = (text + "\n").encode()
        with self.lock:  # one line at a time, to everyone, in the same order
            for wfile in list(self.clients):
                try:
                    wfile.write(line)
                except OSError:  # gone, or stuck past its timeout: forget it
                    self.clients.discard(wfile)


class ChatHandler(socketserver.StreamRequestHandler):
    timeout = 300  # silent, or not reading, for 5 minutes: dropped

    def handle(self):
        name = self.rfile.readline().decode().strip() or "anonymous"
        with self.server.lock:
            self.server.clients.add(self.wfile)
        self.server.broadcast(f"* {name} joined")
        try:
            for line in self.rfile:  # until the client closes
                self.server.broadcast(f"{name}: {line.decode().rstrip()}")
        except OSError:  # reset, or timed out: that client has left too
            pass
        finally:
            with self.server.lock:
                self.server.clients.discard(self.wfile)
            self.server.broadcast(f"* {name} left")


class Client:
    def __init__(self, address, name):
        self.name = name
        self.sock = socket.create_connection(address, timeout=5)
        self.lines = self.sock.makefile("r", encoding="utf-8")
        self.say(name)  # the first line is the name

    def say(self, text):
        self.sock.sendall((text + "\n").encode())

    def hear(self):
        line = self.lines.readline().rstrip("\n")
        print(f"{self.name:>5} hears  {line}")

    def leave(self):
        self.lines.close()
        self.sock.close()


with ChatServer(("127.0.0.1", 0)) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()

    alice = Client(server.server_address, "alice")
    alice.hear()  # * alice joined
    bob = Client(server.server_address, "bob")
    for client in (alice, bob):
        client.hear()  # * bob joined
    carol = Client(server.server_address, "carol")
    everyone = [alice, bob, carol]
    for client in everyone:
        client.hear()  # * carol joined

    alice.say("hello, everyone")
    for client in everyone:
        client.hear()
    bob.say("hi alice")
    for client in everyone:
        client.hear()

    carol.leave()
    for client in (alice, bob):
        client.hear()  # * carol left
    with server.lock:
        print("connected:", len(server.clients))

    alice.leave()
    bob.leave()
    server.shutdown()
