"""Line reading for the bench clients (TCP is a byte stream: a reply may
arrive in several pieces)."""


def read_line(sock):
    """Bytes up to and including the next newline, or what came before EOF."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
