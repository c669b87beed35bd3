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

Clients may be hostile, so every resource has a limit (UploadServer's class
attributes, or keywords of its constructor): the header's size, one file's
size, the uploads running at once and their total size, and a deadline for
the whole upload. A client past one is told which in an error reply, and
the connection is closed.
"""

import contextlib
import hashlib
import json
import os
import pathlib
import queue
import random
import re
import socket
import stat
import struct
import tempfile
import threading
import time

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
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # a name too long, a file where a folder should be...
        raise UnsafeName(f"unusable name: {exc.strerror}") from None
    if mode is not None and stat.S_ISLNK(mode):
        raise UnsafeName("refusing to write over a symlink")
    resolved = target.resolve()  # follows symlinks in the folders on the way
    if resolved == root or root not in resolved.parents:
        raise UnsafeName("the name leads outside the upload folder")
    if not resolved.parent.is_dir():
        raise UnsafeName("no such folder")
    if resolved.exists() and not resolved.is_file():
        raise UnsafeName("not a regular file")
    return resolved


def parse_header(header, max_size):
    """(name, size, sha256) from a header message; Refused if it is not one."""
    try:
        meta = json.loads(header)
        name, size, digest = meta["name"], meta["size"], meta["sha256"]
    except (ValueError, LookupError, TypeError, RecursionError):
        # Not UTF-8 or JSON, nested too deep, not an object, a field missing.
        raise Refused("malformed header") from None
    if type(size) is not int or not 0 <= size <= max_size:
        raise Refused(f"size must be from 0 to {max_size}")
    if not isinstance(digest, str) or not re.fullmatch("[0-9a-f]{64}", digest):
        raise Refused("sha256 must be 64 hexadecimal digits")
    return name, size, digest


class UploadServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    # The limits; the constructor takes each as a keyword too.
    max_header_size = 64 * 1024
    max_upload_size = 1024 * CHUNK  # one file
    max_total_size = 4096 * CHUNK  # the uploads running at once, together
    max_uploads = 8  # running at once
    upload_timeout = 30 * 60  # seconds from connecting to the last byte

    LIMITS = (
        "max_header_size",
        "max_upload_size",
        "max_total_size",
        "max_uploads",
        "upload_timeout",
    )

    def __init__(self, address, folder, **limits):
        for name, value in limits.items():
            if name not in self.LIMITS:
                raise TypeError(f"unexpected keyword argument {name!r}")
            setattr(self, name, value)
        self.folder = pathlib.Path(folder)
        self.log = queue.Queue()  # what happened to each upload, for whoever watches
        self.lock = threading.Lock()
        self.running = 0
        self.reserved = 0  # bytes announced by the uploads running
        super().__init__(address, UploadHandler)

    @contextlib.contextmanager
    def room_for(self, size):
        """Hold a place for an upload of size bytes while it runs; Refused
        when max_uploads are running or max_total_size would be passed."""
        with self.lock:
            if self.running >= self.max_uploads:
                raise Refused(f"busy: {self.max_uploads} uploads already running")
            if self.reserved + size > self.max_total_size:
                raise Refused(f"busy: no room for {size} more bytes")
            self.running += 1
            self.reserved += size
        try:
            yield
        finally:
            with self.lock:
                self.running -= 1
                self.reserved -= size


class UploadHandler(socketserver.MessageRequestHandler):
    timeout = 30  # seconds one read waits for the client

    def reply(self, **status):
        self.connection.settimeout(self.timeout)
        self.write_message(json.dumps(status).encode())
        self.wfile.flush()

    def handle(self):
        self.deadline = time.monotonic() + self.server.upload_timeout
        header = name = None
        try:
            header = self.read_header()
            name, size, digest = parse_header(header, self.server.max_upload_size)
            target = safe_target(self.server.folder, name)
            with self.server.room_for(size):
                self.reply(ok=True)
                event = self.receive(target, name, size, digest)
        except Refused as exc:
            event = ("refused", header, str(exc))
        except EOFError as exc:  # the client closed before the end of its header
            event = ("interrupted", name, str(exc))
        except socket.timeout:  # TimeoutError; a class of its own before 3.10
            if time.monotonic() < self.deadline:
                detail = f"nothing received for {self.timeout} s"
            else:
                detail = f"the upload took more than {self.server.upload_timeout} s"
            event = ("timed out", name, detail)
        self.server.log.put(event)
        outcome, _, detail = event
        # Replies go after the clean-up: a client told of a failure finds nothing left.
        if outcome == "stored":
            self.reply(ok=True, name=name, size=size)
        elif outcome != "interrupted":  # an interrupted client is gone
            self.reply(ok=False, error=detail)

    def read_some(self, size):
        """Up to size bytes, as soon as some arrive (b"" when the client
        closed); socket.timeout past the upload's deadline. Each read waits
        only until then, so a client sending a byte at a time cannot make
        an upload last forever."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("past the upload's deadline")
        self.connection.settimeout(min(self.timeout, left))
        return self.rfile.read1(size)

    def read_exactly(self, size):
        data = b""
        while len(data) < size:
            chunk = self.read_some(size - len(data))
            if not chunk:
                raise EOFError(f"the client closed after {len(data)} of {size} bytes")
            data += chunk
        return data

    def read_header(self):
        """The header message's payload, read under the deadline (hence not
        with read_message(), whose reads each wait for self.timeout): the
        same framing, a 4-byte big-endian length then that many bytes."""
        (size,) = struct.unpack("!I", self.read_exactly(4))
        if size > self.server.max_header_size:
            raise Refused(f"the header is over {self.server.max_header_size} bytes")
        return self.read_exactly(size)

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
                    chunk = self.read_some(min(size - received, CHUNK))
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
