"""What the bench's soak scripts share: servers serving in threads, client
threads working through numbered requests, and line reading (TCP is a byte
stream: a reply may arrive in several pieces)."""

import contextlib
import threading


def read_line(sock):
    """Bytes up to and including the next newline, or what came before EOF."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def serving(servers, poll_interval):
    """Each server's serve_forever() in a thread; on leaving, shutdown(),
    join and server_close()."""
    threads = [threading.Thread(target=s.serve_forever, args=(poll_interval,)) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for server in servers:
            server.shutdown()
        for thread in threads:
            thread.join()
        for server in servers:
            server.server_close()


def run_clients(numbers, clients, request):
    """Runs request(number) for each of `numbers` over `clients` threads;
    returns the errors: what request() returned when not None, and
    the OSErrors it raised."""
    numbers = iter(numbers)
    lock = threading.Lock()
    errors = []

    def client():
        while True:
            with lock:
                number = next(numbers, None)
            if number is None:
                return
            try:
                error = request(number)
            except OSError as exc:
                error = f"{number}: {exc!r}"
            if error is not None:
                with lock:
                    errors.append(error)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
