#!/usr/bin/env python3
"""Keep-alive efficiency at a fixed load: 16 connections, one line echo in
flight on each, at a fixed total rate (20k, 40k, 60k requests/s by default),
against the standard module's ThreadingTCPServer, ours, uvloop and a pure
Rust thread-per-connection server, side by side in one run (server on CPU 0,
load generator on CPU 1). For each rate and server it prints the achieved
rate, the server's CPU µs per request (all its threads), its context
switches per request, and p50/p99 latency; then ours against the Rust server
and the PASS/MISS of the target (≤ 1.1× its CPU per request at every rate).

    python3 bench/paced.py [--rates 20000,40000,60000] [--runs 3] [--duration 3]

About a minute per run with the defaults. Uses the setup of bench/run.py
(its venv, release build and load generator).
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as run  # noqa: E402

SPECS = [run.STD_TTCP, run.RS_TTCP, run.UVLOOP_TCP, run.RUST_TCP]
TARGET = 1.1  # ours / the Rust server, CPU per request, at most


def median_cell(spec, rate, cfg):
    cells = []
    for _ in range(cfg.runs):
        options = {"conns": 16, "size": 64, "rate": rate}
        cell = run.timed_cell(spec, "paced", options, cfg)
        if cell["errors"] or cell["stalled"]:
            sys.exit(f"{run.label(spec)} at {rate}/s: errors or a stalled connection")
        cells.append(cell)
    keys = ("rps", "cpu", "switches", "p50", "p99")
    return {key: statistics.median(cell[key] for cell in cells) for key in keys}


def main():
    rates_flag = ("--rates", {"default": "20000,40000,60000"})
    cfg = run.cell_bench_config(__doc__, 3, 3.0, 1.0, [rates_flag])
    rates = [int(rate) for rate in cfg.rates.split(",")]
    print(f"Medians of {cfg.runs} runs of {cfg.duration:g} s; 16 connections, 64 B lines.\n")
    print(
        "| target rate | server | achieved req/s | CPU µs/req | context switches/req "
        "| p50 µs | p99 µs |"
    )
    print("|---|---|---|---|---|---|---|")
    checks = []
    for rate in rates:
        cells = {}
        for spec in SPECS:
            cell = cells[spec] = median_cell(spec, rate, cfg)
            print(
                f"| {rate:,} | {run.label(spec)} | {cell['rps']:,.0f} | {cell['cpu']:.1f} "
                f"| {cell['switches']:.2f} | {cell['p50']:.0f} | {cell['p99']:.0f} |",
                flush=True,
            )
        ratio = cells[run.RS_TTCP]["cpu"] / cells[run.RUST_TCP]["cpu"]
        checks.append((rate, ratio))
    print()
    for rate, ratio in checks:
        verdict = "PASS" if ratio <= TARGET else "MISS"
        print(f"{verdict}  {rate:,}/s: ours {ratio:.2f}x the Rust server's CPU per request")


if __name__ == "__main__":
    main()
