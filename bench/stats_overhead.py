#!/usr/bin/env python3
"""What server.stats() costs: keep-alive line echo over 16 connections on
socketserver_rs's ThreadingTCPServer, with the core's rfile/wfile counting
bytes (as always) and without (a handler that builds them with no
counters), side by side in one run. The per-request counters run in both:
they are a few atomic adds per connection. Prints server CPU per request
and the ratio.

    python3 bench/stats_overhead.py [--runs 5] [--duration 3]

Uses the setup of bench/run.py (its venv, release build and load generator).
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as run  # noqa: E402

SPECS = {
    "stats on": ("rs", ("ThreadingTCPServer", "line")),
    "bytes not counted": ("rs", ("ThreadingTCPServer", "line-unmetered")),
}


def main():
    cfg = run.cell_bench_config(__doc__, 5, 3.0, 1.0)
    cpu = {name: [] for name in SPECS}
    for _ in range(cfg.runs):
        for name, spec in SPECS.items():
            cell = run.timed_cell(spec, "keepalive", {"conns": 16, "size": 64}, cfg)
            cpu[name].append(cell["cpu"])
            run.log(f"   {name}: {cell['cpu']:.2f} µs/request, {cell['rps']:.0f} req/s")
    on, off = (statistics.median(cpu[name]) for name in SPECS)
    print("| keep-alive line echo, 16 conns | server CPU µs/request (median) |")
    print("|---|---|")
    for name in SPECS:
        print(f"| {name} | {statistics.median(cpu[name]):.2f} |")
    print(f"\nstats on costs {100 * (on / off - 1):+.1f}% server CPU per request")


if __name__ == "__main__":
    main()
