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

It sets up build/bench-venv and bench/loadgen as bench/run.py does (bench/harness.py).
"""

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    FRAMED_IDLE,
    FRAMED_MODELS,
    check_tools,
    framed_idle_cell,
    framed_medians,
    setup,
)


def size_name(size):
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def run_idle():
    print("| server | connections held | threads | RSS before | RSS held |")
    print("|---|---|---|---|---|")
    rss = {}
    for model, title, conns in FRAMED_IDLE:
        row = framed_idle_cell(model, conns)
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
    parser.add_argument(
        "--models", default=",".join(FRAMED_MODELS), help="a subset, comma-separated"
    )
    parser.add_argument("--sizes", default="64,65536", help="message sizes, comma-separated")
    args = parser.parse_args()
    models = {m: FRAMED_MODELS[m] for m in args.models.split(",")}
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
            measured = framed_medians(model, size, args)
            cpu, rps, errors = measured["cpu"], measured["rps"], measured["errors"]
            results[name, model] = (cpu, rps)
            note = f" ({errors} errors)" if errors else ""
            print(f"| {name} | {title} | {cpu:.1f}{note} | {rps:,.0f} |", flush=True)
    print()
    if len(models) < len(FRAMED_MODELS):
        return
    for name in sizes:
        thread, event, pooled, uv = (results[name, m][0] for m in FRAMED_MODELS)
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
