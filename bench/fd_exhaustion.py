"""A threading TCP server out of file descriptors.

The process lowers its RLIMIT_NOFILE and opens dummy descriptors up to the
limit while a client process keeps connecting, so that every accept() fails
with EMFILE. It measures the CPU time the server process uses meanwhile,
collects what the ``socketserver_rs`` logger said, then frees the
descriptors and times how long a new client waits for its echo.

    python bench/fd_exhaustion.py [--module socketserver] [--seconds 2]

The last line printed is a JSON object with the figures.
"""

import argparse
import importlib
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time

from clients import read_line

# Connects again and again and keeps every connection open, so that a
# connection the server does accept never gives its descriptor back.
CLIENT = """
import socket, sys, time
address = (sys.argv[1], int(sys.argv[2]))
deadline = time.monotonic() + float(sys.argv[3])
held = []
while time.monotonic() < deadline:
    try:
        sock = socket.create_connection(address, timeout=0.5)
        sock.sendall(b"x\\n")
        held.append(sock)
    except OSError:
        pass
    time.sleep(0.02)
"""


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.levelname, record.getMessage()))


def exhaust_descriptors(headroom=32):
    """Lower the soft limit just above the descriptors in use and open
    dummy ones up to it. Returns the dummies and the saved limits."""
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + headroom, saved[1]))
    dummies = []
    try:
        while True:
            dummies.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        if exc.errno not in (24, 23):  # EMFILE, ENFILE
            raise
    return dummies, saved


def run(module_name="socketserver_rs", seconds=2.0):
    ss = importlib.import_module(module_name)
    records = Records()
    logger = logging.getLogger("socketserver_rs")
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    class Echo(ss.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)

    class Server(ss.ThreadingTCPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass

    result = {"module": module_name, "seconds": seconds}
    with Server(("127.0.0.1", 0), Echo) as server:
        host, port = server.server_address
        serving = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        serving.start()
        with socket.create_connection((host, port), timeout=5) as warm:
            warm.sendall(b"warm\n")
            assert warm.recv(16) == b"warm\n"

        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, host, str(port), str(seconds + 30)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.2)  # the client is connecting
            dummies, saved = exhaust_descriptors()
            try:
                time.sleep(0.5)  # into the burst
                cpu, wall = time.process_time(), time.monotonic()
                time.sleep(seconds)
                cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            finally:
                for fd in dummies:
                    os.close(fd)
                resource.setrlimit(resource.RLIMIT_NOFILE, saved)
        finally:
            client.terminate()
            client.wait()
        result["dummy_fds"] = len(dummies)
        result["cpu_fraction"] = round(cpu / wall, 4)
        during = list(records.records)

        start = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=5) as fresh:
                fresh.sendall(b"hello\n")
                reply = read_line(fresh)
            result["served_after_s"] = round(time.monotonic() - start, 4)
            result["reply_ok"] = reply == b"hello\n"
        except OSError as exc:
            result["served_after_s"] = None
            result["reply_ok"] = False
            result["client_error"] = repr(exc)
        time.sleep(0.3)
        server.shutdown()
        serving.join(5)
    result["warnings_during"] = sum(level == "WARNING" for level, _ in during)
    result["warnings"] = sum(level == "WARNING" for level, _ in records.records)
    result["infos"] = sum(level == "INFO" for level, _ in records.records)
    result["log"] = records.records
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="socketserver_rs")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.module, args.seconds)))


if __name__ == "__main__":
    main()
