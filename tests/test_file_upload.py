"""examples/file_upload.py keeps uploads inside its folder and whole.

Beyond what the example prints: every way out of the folder is refused, a
symlink is never written through, and an upload that fails for any reason
(cut short, wrong checksum, too slow) leaves neither a truncated file nor a
temporary one, and leaves a file it would have replaced untouched. A hostile
client meets a limit at every step (header size and shape, file size, total
size and number of uploads at once, a deadline for the whole upload) and is
told which one in a reply before the connection closes.
"""

import hashlib
import importlib.util
import json
import pathlib
import select
import socket
import struct
import threading

import pytest
from conftest import IO_TIMEOUT, wait_until

import socketserver_rs

ROOT = pathlib.Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("file_upload", ROOT / "examples" / "file_upload.py")
file_upload = importlib.util.module_from_spec(spec)
spec.loader.exec_module(file_upload)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "uploads"
    (path / "sub").mkdir(parents=True)
    return path


@pytest.fixture
def start(runner, folder):
    def start(**limits):
        server = runner.track(file_upload.UploadServer(("127.0.0.1", 0), folder, **limits))
        runner.start(server)
        return server

    return start


@pytest.fixture
def server(start):
    return start()


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def write(path, content):
    path.write_bytes(content)
    return path


def send_header(server, **header):
    client = socketserver_rs.MessageClient(server.server_address, IO_TIMEOUT)
    status = json.loads(client.request(json.dumps(header).encode()))
    return client, status


def next_event(server, kind):
    while True:
        event = server.log.get(timeout=IO_TIMEOUT)
        if event[0] == kind:
            return event


@pytest.mark.parametrize(
    "name",
    [
        *("", ".", "..", "../x", "sub/../../x", "/etc/passwd", "//x", "a\0b", "sub", "missing/x"),
        *("a" * 300, "sub/" + "a" * 300, "a" * 300 + "/b"),  # longer than a name may be
    ],
)
def test_names_outside_the_folder_are_refused(folder, name):
    with pytest.raises(file_upload.UnsafeName):
        file_upload.safe_target(folder, name)


@pytest.mark.parametrize("name", ["a.txt", "./a.txt", "sub/b.txt", "sub//c.txt"])
def test_names_inside_the_folder_are_accepted(folder, name):
    target = file_upload.safe_target(folder, name)
    assert folder.resolve() in target.parents


def test_escape_over_the_wire_is_refused(server, folder, tmp_path):
    source = write(tmp_path / "f.txt", b"data")
    for name in ("../escape.txt", "/escape.txt", "sub/../../escape.txt"):
        status = file_upload.upload(server.server_address, source, name)
        assert status["ok"] is False, name
    assert not (tmp_path / "escape.txt").exists()
    assert listing(folder) == ["sub"]


def test_symlinks_are_not_written_through(server, folder, tmp_path):
    outside_file = write(tmp_path / "outside.txt", b"precious")
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (folder / "link.txt").symlink_to(outside_file)
    (folder / "linkdir").symlink_to(outside_dir)
    (folder / "dangling").symlink_to(tmp_path / "not-yet")
    source = write(tmp_path / "f.txt", b"attack")
    for name in ("link.txt", "linkdir/x.txt", "dangling"):
        status = file_upload.upload(server.server_address, source, name)
        assert status["ok"] is False, name
    assert outside_file.read_bytes() == b"precious"
    assert list(outside_dir.iterdir()) == []
    assert not (tmp_path / "not-yet").exists()
    assert (folder / "link.txt").is_symlink()


def test_an_interrupted_upload_leaves_nothing(server, folder):
    write(folder / "kept.bin", b"the old version")
    for name in ("new.bin", "kept.bin"):
        client, status = send_header(server, name=name, size=1_000_000, sha256="0" * 64)
        assert status == {"ok": True}
        client.socket.sendall(b"x" * 200_000)
        # While the upload runs, its bytes go to a temporary file beside the target.
        assert wait_until(lambda: any(p.name.endswith(".part") for p in folder.iterdir()))
        client.close()
        assert next_event(server, "interrupted")[1] == name
    assert listing(folder) == ["kept.bin", "sub"]
    assert (folder / "kept.bin").read_bytes() == b"the old version"


def test_a_checksum_mismatch_stores_nothing(server, folder, tmp_path):
    write(folder / "kept.bin", b"the old version")
    for name in ("new.bin", "kept.bin"):
        client, status = send_header(server, name=name, size=4, sha256="0" * 64)
        with client:
            assert status == {"ok": True}
            client.socket.sendall(b"data")
            assert json.loads(client.recv_message()) == {
                "ok": False,
                "error": "SHA-256 mismatch",
            }
    assert listing(folder) == ["kept.bin", "sub"]
    assert (folder / "kept.bin").read_bytes() == b"the old version"


def test_a_good_upload_replaces_the_old_file(server, folder, tmp_path):
    write(folder / "sub" / "kept.bin", b"the old version")
    source = write(tmp_path / "new", b"the new version")
    status = file_upload.upload(server.server_address, source, "sub/kept.bin")
    assert status == {"ok": True, "name": "sub/kept.bin", "size": 15}
    assert (folder / "sub" / "kept.bin").read_bytes() == b"the new version"
    assert listing(folder) == ["sub", "sub/kept.bin"]


def test_bad_headers_are_refused(server, folder):
    digest = hashlib.sha256(b"").hexdigest()
    too_big = server.max_upload_size + 1
    for header in (
        {"name": "a", "size": too_big, "sha256": digest},
        {"name": "a", "size": -1, "sha256": digest},
        {"name": "a", "size": "1", "sha256": digest},
        {"name": 5, "size": 0, "sha256": digest},
        {"size": 0, "sha256": digest},
        ["a", 0],
    ):
        with socketserver_rs.MessageClient(server.server_address, IO_TIMEOUT) as client:
            status = json.loads(client.request(json.dumps(header).encode()))
        assert status["ok"] is False, header
        assert next_event(server, "refused")[2] == status["error"]
    with socketserver_rs.MessageClient(server.server_address, IO_TIMEOUT) as client:
        status = json.loads(client.request(b"not json"))
    assert status == {"ok": False, "error": "malformed header"}
    assert listing(folder) == ["sub"]


def test_uploads_run_in_parallel(server, folder, tmp_path):
    sources = {f"f{i}.bin": write(tmp_path / f"f{i}", bytes([i]) * (i * 100_000)) for i in range(8)}
    # Held open: one upload that has not finished does not stop the others.
    client, status = send_header(server, name="slow.bin", size=10, sha256="0" * 64)
    results = {}

    def run(name):
        results[name] = file_upload.upload(server.server_address, sources[name], name)

    threads = [threading.Thread(target=run, args=(name,)) for name in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(IO_TIMEOUT)
    client.close()
    assert all(results[name]["ok"] for name in sources), results
    for name, source in sources.items():
        assert (folder / name).read_bytes() == source.read_bytes()
    next_event(server, "interrupted")
    assert listing(folder) == sorted([*sources, "sub"])


def refusal(server, header):
    """The server's reply to header (bytes), which must be a refusal it logged."""
    with socketserver_rs.MessageClient(server.server_address, IO_TIMEOUT) as client:
        status = json.loads(client.request(header))
    assert status["ok"] is False, header[:100]
    assert next_event(server, "refused")[2] == status["error"]
    return status["error"]


@pytest.mark.parametrize(
    "header",
    [
        b"[" * 60_000,  # nested deeper than the parser recurses
        b'{"name": ' + b"[" * 60_000,
        json.dumps({"name": "a" * 300, "size": 0, "sha256": "0" * 64}).encode(),
        json.dumps({"name": "sub/" + "a" * 300 + "/b", "size": 0, "sha256": "0" * 64}).encode(),
        json.dumps({"name": "a", "size": True, "sha256": "0" * 64}).encode(),
        json.dumps({"name": "a", "size": 0, "sha256": None}).encode(),
    ],
    ids=range(6),
)
def test_any_bad_header_is_answered(server, folder, header):
    refusal(server, header)
    # The server goes on serving.
    assert refusal(server, b"not json") == "malformed header"
    assert listing(folder) == ["sub"]


def test_an_oversized_header_is_answered(start, tmp_path):
    server = start(max_header_size=200)
    source = write(tmp_path / "f", b"data")
    header = {"name": "f", "size": 4, "sha256": file_upload.sha256_of(source)}
    padded = json.dumps(header).encode().ljust(200)
    assert refusal(server, padded + b" ") == "the header is over 200 bytes"
    with socketserver_rs.MessageClient(server.server_address, IO_TIMEOUT) as client:
        assert json.loads(client.request(padded)) == {"ok": True}
        client.socket.sendall(b"data")
        assert json.loads(client.recv_message()) == {"ok": True, "name": "f", "size": 4}


def test_the_default_header_limit_is_answered(server):
    too_long = b" " * (server.max_header_size + 1)
    assert refusal(server, too_long) == f"the header is over {server.max_header_size} bytes"


def test_uploads_beyond_max_uploads_are_refused(start, folder):
    server = start(max_uploads=2)
    held = [send_header(server, name=f"f{i}", size=10, sha256="0" * 64) for i in range(2)]
    assert [status for _, status in held] == [{"ok": True}] * 2
    header = {"name": "g", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    assert refusal(server, json.dumps(header).encode()) == "busy: 2 uploads already running"
    held[0][0].close()
    next_event(server, "interrupted")
    # The slot is free again.
    client, status = send_header(server, **header)
    with client:
        assert status == {"ok": True}
        assert json.loads(client.recv_message()) == {"ok": True, "name": "g", "size": 0}
    held[1][0].close()


def test_uploads_beyond_max_total_size_are_refused(start, folder):
    server = start(max_total_size=1000)
    first, status = send_header(server, name="a", size=600, sha256="0" * 64)
    assert status == {"ok": True}
    header = json.dumps({"name": "b", "size": 600, "sha256": "0" * 64}).encode()
    assert refusal(server, header) == "busy: no room for 600 more bytes"
    second, status = send_header(server, name="c", size=400, sha256="0" * 64)
    assert status == {"ok": True}
    first.close()
    next_event(server, "interrupted")
    # The first upload's room is free again.
    third, status = send_header(server, name="b", size=600, sha256="0" * 64)
    assert status == {"ok": True}
    second.close()
    third.close()


def drip(sock, data):
    """Send data one byte at a time, each after 20 ms without a reply (at
    most 5 s); the reply."""
    for byte in data[:250]:
        if select.select([sock], [], [], 0.02)[0]:
            break
        sock.sendall(bytes([byte]))
    return json.loads(socketserver_rs.recv_message(sock))


def test_a_slow_header_meets_the_deadline(start, folder):
    server = start(upload_timeout=0.5)
    with socket.create_connection(server.server_address, IO_TIMEOUT) as sock:
        sock.sendall(struct.pack("!I", 1000))
        status = drip(sock, b" " * 1000)
    assert status == {"ok": False, "error": "the upload took more than 0.5 s"}
    assert next_event(server, "timed out")[2] == status["error"]


def test_a_slow_upload_meets_the_deadline(start, folder):
    write(folder / "kept.bin", b"the old version")
    server = start(upload_timeout=0.5)
    client, status = send_header(server, name="kept.bin", size=1000, sha256="0" * 64)
    with client:
        assert status == {"ok": True}
        status = drip(client.socket, b"x" * 1000)
    assert status == {"ok": False, "error": "the upload took more than 0.5 s"}
    assert next_event(server, "timed out")[1] == "kept.bin"
    assert listing(folder) == ["kept.bin", "sub"]
    assert (folder / "kept.bin").read_bytes() == b"the old version"


def test_a_stalled_upload_is_answered(start, folder, monkeypatch):
    monkeypatch.setattr(file_upload.UploadHandler, "timeout", 0.2)
    server = start()
    client, status = send_header(server, name="new.bin", size=1000, sha256="0" * 64)
    with client:
        assert status == {"ok": True}
        client.socket.sendall(b"x" * 10)
        status = json.loads(client.recv_message())
    assert status == {"ok": False, "error": "nothing received for 0.2 s"}
    assert next_event(server, "timed out")[1] == "new.bin"
    assert listing(folder) == ["sub"]
