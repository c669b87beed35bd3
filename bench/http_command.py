#!/usr/bin/env python3
"""`python -m socketserver_rs http` against `python -m http.server`.

Both serve the same directory (a 1 KiB file) from the same interpreter,
pinned to CPU 0, while wrk (pinned to CPU 1) holds 16 connections for a few
seconds: HTTP/1.0 (the default: a connection per request) and HTTP/1.1
keep-alive (`-p HTTP/1.1`). Prints requests/s of each and their ratio, the
median of a few runs. Loopback only; stops by itself.

    python3 bench/http_command.py [--seconds 5] [--runs 3]

Needs wrk (apt-get install -y wrk) and the package installed for the
interpreter running this script (the bench venv of bench/run.py will do:
build/bench-venv/bin/python bench/http_command.py).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import LOADGEN_CPU, SERVER_CPU, parse_wrk  # noqa: E402

COMMANDS = {
    "http.server": ["-m", "http.server"],
    "socketserver_rs http": ["-m", "socketserver_rs", "http"],
}
MODES = {"HTTP/1.0": "HTTP/1.0", "HTTP/1.1 keep-alive": "HTTP/1.1"}


def serve(command, protocol, site):
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, sys.executable, *command, "0", "-b", "127.0.0.1"]
        + ["-d", site, "-p", protocol],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    match = re.search(r"port (\d+)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit(f"{' '.join(command)} did not start")
    return proc, int(match.group(1))


def measure(command, protocol, site, seconds):
    proc, port = serve(command, protocol, site)
    try:
        out = subprocess.run(
            ["taskset", "-c", LOADGEN_CPU, "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency"]
            + [f"http://127.0.0.1:{port}/file.bin"],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    return parse_wrk(out)["rps"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as site:
        Path(site, "file.bin").write_bytes(os.urandom(1024))
        print("| mode | http.server req/s | socketserver_rs http req/s | ratio |")
        print("|---|---|---|---|")
        for mode, protocol in MODES.items():
            rps = {name: [] for name in COMMANDS}
            for _ in range(args.runs):
                for name, command in COMMANDS.items():
                    rps[name].append(measure(command, protocol, site, args.seconds))
            std, ours = (statistics.median(rps[name]) for name in COMMANDS)
            print(f"| {mode} | {std:,.0f} | {ours:,.0f} | {ours / std:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
