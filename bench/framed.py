#!/usr/bin/env python3
"""Framed echo: a MessageRequestHandler in the thread model, event-driven,
and a uvloop asyncio.Protocol decoding the same frames, side by side.

16 keep-alive connections (bench/loadgen `framed`, pinned to CPU 1) each
send a length-prefixed message and read the echo, in a loop, against each
server (pinned to CPU 0): server CPU time per message, the median of a few
runs, for 64-byte and 64 KiB messages, and the ratios. Loopback only;
stops by itself.

    python3 bench/framed.py [--runs 3] [--duration 3] [--no-install]

It sets up build/bench-venv and bench/loadgen as bench/run.py does.
"""

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PYTHON, SERVERS, Server, check_tools, cpu_seconds, loadgen, setup  # noqa: E402

MODELS = {
    "thread": "(a) thread per connection (ThreadingTCPServer, event_driven = False)",
    "event": "(b) event-driven, handlers on the serving thread (TCPServer)",
    "event-threading": "(b') event-driven, handlers on the pool (ThreadingTCPServer)",
    "uvloop": "(c) uvloop asyncio.Protocol",
}
SIZES = {"64 B": 64, "64 KiB": 65536}


def cell(model, size, args):
    server = Server([PYTHON, SERVERS, "framed", "--model", model], model)
    marks = {}

    def on_line(line, _proc):
        if line in ("START", "STOP"):
            marks[line] = cpu_seconds(server.pid)

    try:
        options = {"conns": 16, "size": size, "warmup": args.warmup, "duration": args.duration}
        result = loadgen("framed", server.port, options, args.warmup + args.duration + 30, on_line)
    finally:
        server.stop()
    messages = result["requests"]
    cpu = (marks["STOP"] - marks["START"]) * 1e6 / messages if messages else math.nan
    return {"cpu": cpu, "rps": result["rps"], "errors": result["errors"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--no-install", action="store_true")
    args = parser.parse_args()
    args.no_wrk = True
    check_tools(args)
    setup(args)
    print("| messages | server | CPU µs/message | messages/s |")
    print("|---|---|---|---|")
    medians = {}
    for size_name, size in SIZES.items():
        for model, title in MODELS.items():
            runs = [cell(model, size, args) for _ in range(args.runs)]
            cpu = statistics.median(run["cpu"] for run in runs)
            rps = statistics.median(run["rps"] for run in runs)
            errors = sum(run["errors"] for run in runs)
            medians[size_name, model] = (cpu, rps)
            note = f" ({errors} errors)" if errors else ""
            print(f"| {size_name} | {title} | {cpu:.1f}{note} | {rps:,.0f} |", flush=True)
    print()
    for size_name in SIZES:
        thread, event, pooled, uv = (medians[size_name, m][0] for m in MODELS)
        print(
            f"{size_name}: CPU per message, (a)/(b) {thread / event:.2f}x, "
            f"(c)/(b) {uv / event:.2f}x, (a)/(b') {thread / pooled:.2f}x, "
            f"(c)/(b') {uv / pooled:.2f}x (above 1: the event-driven path costs less)"
        )
    big_thread, big_event = medians["64 KiB", "thread"][1], medians["64 KiB", "event"][1]
    print(f"64 KiB messages/s, (b)/(a): {big_event / big_thread:.2f}x")


if __name__ == "__main__":
    main()
