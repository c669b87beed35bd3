"""Uploading files over framed messages.

The protocol, one connection per file:

1. client -> server: a message, JSON {"name": ..., "size": ..., "sha256": ...}
2. server -> client: a message, JSON {"ok": true} to go on, or {"ok": false, "error": ...}
3. client -> server: exactly `size` raw bytes, with socket.sendfile() (zero copy: the
   kernel moves the file to the socket, no Python bytes in between)
4. server -> client: a message, JSON {"ok": true, "name": ..., "size": ...} or an error

The server stores files only inside its folder: it refuses absolute names,
`..`, names that resolve outside the folder through a symlink, and writing
over a symlink. It writes each upload to a temporary file in the target's
folder and renames it into place only once every byte has arrived and the
SHA-256 matches, so an interrupted or corrupted upload leaves nothing
behind. Uploads run in parallel (ThreadingTCPServer).
"""

import hashlib
import json
import os
import pathlib
import queue
import random
import tempfile
import threading

import socketserver_rs as socketserver

CHUNK = 1024 * 1024


class Refused(ValueError):
    """An upload the server will not take; the text says why."""


class UnsafeName(Refused):
    pass


def safe_target(folder, name):
    """The path to store upload `name` at, inside folder; UnsafeName if
    that path would be outside it or is a symlink."""
    root = pathlib.Path(folder).resolve()
    if not isinstance(name, str) or not name or "\0" in name:
        raise UnsafeName("a file name is required")
    relative = pathlib.PurePosixPath(name)
    if relative.is_absolute():
        raise UnsafeName("absolute paths are refused")
    if ".." in relative.parts:
        raise UnsafeName("'..' is refused")
    target = root.joinpath(*relative.parts)
    if target.is_symlink():
        raise UnsafeName("refusing to write over a symlink")
    resolved = target.resolve()  # follows symlinks in the folders on the way
    if resolved == root or root not in resolved.parents:
        raise UnsafeName("the name leads outside the upload folder")
    if not resolved.parent.is_dir():
        raise UnsafeName("no such folder")
    if resolved.exists() and not resolved.is_file():
        raise UnsafeName("not a regular file")
    return resolved


class UploadServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    max_upload_size = 1024 * CHUNK

    def __init__(self, address, folder):
        self.folder = pathlib.Path(folder)
        self.log = queue.Queue()  # what happened to each upload, for whoever watches
        super().__init__(address, UploadHandler)


class UploadHandler(socketserver.MessageRequestHandler):
    max_message_size = 64 * 1024  # the header; the content is not a message
    timeout = 30

    def reply(self, **status):
        self.write_message(json.dumps(status).encode())
        self.wfile.flush()

    def handle(self):
        header = self.read_message()
        if header is None:
            return
        try:
            meta = json.loads(header)
            name, size, digest = meta["name"], meta["size"], meta["sha256"]
            if not isinstance(size, int) or not 0 <= size <= self.server.max_upload_size:
                raise Refused(f"size must be from 0 to {self.server.max_upload_size}")
            target = safe_target(self.server.folder, name)
        except Refused as exc:
            error = str(exc)
        except (ValueError, KeyError, TypeError):  # not JSON, or not the fields above
            error = "malformed header"
        else:
            error = None
        if error:
            self.server.log.put(("refused", header, error))
            self.reply(ok=False, error=error)
            return
        self.reply(ok=True)
        outcome, _, detail = event = self.receive(target, name, size, digest)
        self.server.log.put(event)
        # Replies go after the clean-up: a client told of a failure finds nothing left.
        if outcome == "stored":
            self.reply(ok=True, name=name, size=size)
        elif outcome != "interrupted":  # an interrupted client is gone
            self.reply(ok=False, error=detail)

    def receive(self, target, name, size, digest):
        """Store the next size bytes at target; (outcome, name, detail).
        Only a stored upload leaves a file."""
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".upload-", suffix=".part")
        stored = False
        try:
            sha256 = hashlib.sha256()
            received = 0
            with os.fdopen(fd, "wb") as out:
                while received < size:
                    chunk = self.rfile.read(min(size - received, CHUNK))
                    if not chunk:  # the client closed before the end
                        return ("interrupted", name, f"{received} of {size} bytes")
                    sha256.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
            if sha256.hexdigest() != digest:
                return ("corrupted", name, "SHA-256 mismatch")
            # rename() replaces a symlink rather than writing through it, and
            # one created since the check is refused here.
            if target.is_symlink():
                return ("refused", name, "refusing to write over a symlink")
            os.replace(temporary, target)
            stored = True
            return ("stored", name, f"{size} bytes")
        finally:
            if not stored:
                os.unlink(temporary)


def sha256_of(path):
    sha256 = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sha256.update(chunk)
    return sha256.hexdigest()


def upload(address, path, name=None, timeout=30):
    """Upload the file at path as name; the server's final status (a dict)."""
    header = {
        "name": name or os.path.basename(path),
        "size": os.path.getsize(path),
        "sha256": sha256_of(path),
    }
    with socketserver.MessageClient(address, timeout) as client, open(path, "rb") as f:
        status = json.loads(client.request(json.dumps(header).encode()))
        if status["ok"]:
            client.socket.sendfile(f)
            reply = client.recv_message()
            if reply is None:
                raise ConnectionResetError("the server closed the connection without replying")
            status = json.loads(reply)
        return status


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        folder = tmp / "uploads"
        folder.mkdir()
        rng = random.Random(0)
        files = {
            "notes.txt": b"remember the milk\n",
            "photo.raw": bytes(rng.getrandbits(8) for _ in range(4096)) * 1280,  # 5 MiB
            "empty.bin": b"",
        }
        for name, content in files.items():
            (tmp / name).write_bytes(content)

        with UploadServer(("127.0.0.1", 0), folder) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            address = server.server_address

            # Three uploads at once.
            results = {}
            threads = [
                threading.Thread(
                    target=lambda n=name: results.update({n: upload(address, tmp / n)})
                )
                for name in files
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for name in files:
                print("upload", name, "->", results[name])

            print("upload ../escape.txt ->", upload(address, tmp / "notes.txt", "../escape.txt"))
            print("upload /etc/motd ->", upload(address, tmp / "notes.txt", "/etc/motd"))

            # An upload that stops half-way: the client goes away.
            with socketserver.MessageClient(address, 30) as client:
                header = {"name": "cut.bin", "size": 1_000_000, "sha256": "0" * 64}
                client.request(json.dumps(header).encode())
                client.socket.sendall(b"x" * 300_000)
            while True:
                event = server.log.get(timeout=10)
                if event[0] == "interrupted":
                    print("server:", *event)
                    break
            server.shutdown()

        stored = sorted(p.name for p in folder.iterdir())
        print("in the upload folder:", stored)  # no cut.bin, no temporary file
        print("escaped:", (tmp / "escape.txt").exists())
        same = all((folder / n).read_bytes() == c for n, c in files.items())
        print("contents intact:", same)


if __name__ == "__main__":
    main()
