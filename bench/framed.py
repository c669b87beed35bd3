#!/usr/bin/env python3
"""Framed echo: a MessageRequestHandler in the thread model, event-driven,
and a uvloop asyncio.Protocol decoding the same frames, side by side.

timed: 16 keep-alive connections (bench/loadgen `framed`, pinned to CPU 1)
each send a length-prefixed message and read the echo, in a loop, against
each server (pinned to CPU 0): server CPU time per message, the median of a
few runs, for 64-byte and 64 KiB messages, and the ratios.

idle: the standard module's ThreadingTCPServer holding 1,000 idle framed
connections (each answered once) and ours, event-driven, holding 10,000:
server threads and resident memory, one run each.

Loopback only; stops by itself.

    python3 bench/framed.py [--only timed|idle] [--runs 3] [--duration 3] [--no-install]

It sets up build/bench-venv and bench/loadgen as bench/run.py does.
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402
    PYTHON,
    SERVERS,
    Server,
    check_tools,
    cpu_seconds,
    loadgen,
    proc_status,
    rss_kib,
    setup,
)

MODELS = {
    "thread": "(a) thread per connection (ThreadingTCPServer, event_driven = False)",
    "event": "(b) event-driven, handlers on the serving thread (TCPServer)",
    "event-threading": "(b') event-driven, handlers on the pool (ThreadingTCPServer)",
    "uvloop": "(c) uvloop asyncio.Protocol",
}


def size_name(size):
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def medians(model, size, args):
    """The median CPU µs/message and messages/s of args.runs cells, and
    the errors of all."""
    runs = [cell(model, size, args) for _ in range(args.runs)]
    return {
        "cpu": statistics.median(run["cpu"] for run in runs),
        "rps": statistics.median(run["rps"] for run in runs),
        "errors": sum(run["errors"] for run in runs),
    }


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


IDLE = [
    ("stdlib", "the standard module's ThreadingTCPServer, a thread per connection", 1000),
    ("event-threading", "socketserver_rs ThreadingTCPServer, event-driven", 10000),
]


def idle_cell(model, conns):
    """Server threads and RSS (KiB) with `conns` idle framed connections."""
    server = Server([PYTHON, SERVERS, "framed", "--model", model], model)
    seen = {}

    def on_line(line, proc):
        if line == "HELD":
            time.sleep(0.5)  # let the last handlers settle
            seen["rss"] = rss_kib(server.pid)
            seen["threads"] = proc_status(server.pid, "Threads")
            proc.stdin.close()

    try:
        before = rss_kib(server.pid)
        result = loadgen("framed-idle", server.port, {"conns": conns, "hold": 60}, 180, on_line)
    finally:
        server.stop()
    return {"before": before, "held": result["held"], "errors": result["errors"], **seen}


def run_idle():
    print("| server | connections held | threads | RSS before | RSS held |")
    print("|---|---|---|---|---|")
    rss = {}
    for model, title, conns in IDLE:
        row = idle_cell(model, conns)
        rss[model] = row.get("rss", math.nan)
        note = f" ({row['errors']} errors)" if row["errors"] else ""
        print(
            f"| {title} | {row['held']:,} of {conns:,}{note} | {row.get('threads')} "
            f"| {row['before'] / 1024:.1f} MiB | {rss[model] / 1024:.1f} MiB |",
            flush=True,
        )
    ratio = rss["stdlib"] / rss["event-threading"]
    print(
        f"\nRSS, the standard module with 1,000 over ours with 10,000: {ratio:.2f}x "
        "(above 1: ours holds ten times the connections in less memory)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--only", choices=["timed", "idle"])
    parser.add_argument("--models", default=",".join(MODELS), help="a subset, comma-separated")
    parser.add_argument("--sizes", default="64,65536", help="message sizes, comma-separated")
    args = parser.parse_args()
    models = {m: MODELS[m] for m in args.models.split(",")}
    sizes = {size_name(int(n)): int(n) for n in args.sizes.split(",")}
    args.no_wrk = True
    check_tools(args)
    setup(args)
    if args.only != "timed":
        run_idle()
        print()
    if args.only == "idle":
        return
    print("| messages | server | CPU µs/message | messages/s |")
    print("|---|---|---|---|")
    results = {}
    for name, size in sizes.items():
        for model, title in models.items():
            measured = medians(model, size, args)
            cpu, rps, errors = measured["cpu"], measured["rps"], measured["errors"]
            results[name, model] = (cpu, rps)
            note = f" ({errors} errors)" if errors else ""
            print(f"| {name} | {title} | {cpu:.1f}{note} | {rps:,.0f} |", flush=True)
    print()
    if len(models) < len(MODELS):
        return
    for name in sizes:
        thread, event, pooled, uv = (results[name, m][0] for m in MODELS)
        print(
            f"{name}: CPU per message, (a)/(b) {thread / event:.2f}x, "
            f"(c)/(b) {uv / event:.2f}x, (a)/(b') {thread / pooled:.2f}x, "
            f"(c)/(b') {uv / pooled:.2f}x (above 1: the event-driven path costs less)"
        )
    for name in sizes:
        models = ("thread", "event", "event-threading")
        thread, event, pooled = (results[name, m][1] for m in models)
        print(f"{name}: messages/s, (b)/(a) {event / thread:.2f}x, (b')/(a) {pooled / thread:.2f}x")


if __name__ == "__main__":
    main()
