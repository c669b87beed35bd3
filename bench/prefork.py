#!/usr/bin/env python3
"""A CPU-bound handler on 2 pre-forked workers against one process.

One process serves on one core whatever its threads: the handler holds the
GIL. prefork.serve_prefork() runs it on several processes, each with its
own GIL. Each server (a ThreadingTCPServer on loopback) answers every line
with the result of a few milliseconds of pure-Python arithmetic; 4
clients in threads of this process, which mostly wait, send
a line each on a new connection for a few seconds. Prints requests/s of each and their ratio.
Loopback only; stops by itself.

    python3 bench/prefork.py [--seconds 4] [--workers 2]

Needs the package installed for the interpreter running this script.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

SERVER = textwrap.dedent(
    """
    import sys
    import socketserver_rs
    from socketserver_rs.prefork import serve_prefork

    class Work(socketserver_rs.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                n = int(line)
                self.wfile.write(b"%d\\n" % sum(i * i for i in range(n)))

    server = socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Work)
    print(server.server_address[1], flush=True)
    workers = int(sys.argv[1])
    if workers == 0:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        server.server_close()
    else:
        sys.exit(serve_prefork(server, workers=workers, graceful_timeout=5))
    """
)

WORK = 300_000  # about 20 ms of CPU per request: the clients cost little beside it
CLIENTS = 4


def measure(workers, seconds):
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(workers)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        port = int(proc.stdout.readline())
        time.sleep(0.5)  # the workers start
        counts = [0] * CLIENTS
        deadline = time.monotonic() + seconds

        def client(index):
            # A connection per request: a worker that accepted a keep-alive
            # connection would serve it to the end, however busy it is.
            while time.monotonic() < deadline:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                    sock.sendall(b"%d\n" % WORK)
                    sock.shutdown(socket.SHUT_WR)
                    if not sock.recv(100):
                        return
                    counts[index] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / seconds
    finally:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    single = measure(0, args.seconds)
    prefork = measure(args.workers, args.seconds)
    print(f"one process:            {single:8.1f} requests/s")
    print(f"{args.workers} pre-forked workers:  {prefork:8.1f} requests/s")
    print(f"ratio: {prefork / single:.2f}x  ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
