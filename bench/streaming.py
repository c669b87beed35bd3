#!/usr/bin/env python3
"""Lines streamed through rfile/wfile: one connection writes newline-ended
lines of 64 B, 4 KiB and 64 KiB as fast as it can and reads them back from
`for line in self.rfile: self.wfile.write(line)` on the standard module's
ThreadingTCPServer and on ours, side by side in one run (server on CPU 0,
load generator on CPU 1). Also, at 64 B and 4 KiB, ours with the handler's
own `disable_nagle_algorithm = False` (Nagle's algorithm on, as on the
standard module's connections); and at 4 KiB, ours with `rbufsize = 65536` against
the standard module's own recv/sendall of 64 KiB chunks. Prints
MiB/s and server CPU time per MiB (the medians of --runs), their ratios
("times better") and the PASS/MISS of each throughput target.

    python3 bench/streaming.py [--runs 1] [--duration 2] [--no-install]

About half a minute with the defaults. Uses the setup of bench/run.py (its
venv, release build and load generator).
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as run  # noqa: E402

SIZES = {64: "64 B", 4096: "4 KiB", 65536: "64 KiB"}
# The smallest ratio to the standard module each size aims at.
TARGETS = {64: 1.0, 4096: 1.25, 65536: 1.4}
BIG_BUFFER_TARGET = 0.5


def spec(impl, handler):
    return (impl, ("ThreadingTCPServer", handler))


def measure(cell_spec, command, size, cfg):
    """The median MiB/s and server CPU µs per MiB of cfg.runs cells."""
    runs = []
    for _ in range(cfg.runs):
        cell = run.timed_cell(cell_spec, command, {"conns": 1, "size": size}, cfg)
        if cell["errors"] or cell["stalled"]:
            sys.exit(f"{run.label(cell_spec)} at {size} B: errors or a stalled connection")
        runs.append(cell)
    return tuple(statistics.median(cell[key] for cell in runs) for key in ("rps", "cpu"))


def main():
    cfg = run.cell_bench_config(__doc__, 1, 2.0, 0.5)
    rows, checks = [], []
    for size, name in SIZES.items():
        std = measure(spec("std", "lines"), "lines", size, cfg)
        ours = measure(spec("rs", "lines"), "lines", size, cfg)
        rows.append((f"lines of {name}", std, ours))
        checks.append((f"{name} lines ≥ {TARGETS[size]}x", ours[0] / std[0] >= TARGETS[size]))
    for size in (64, 4096):
        std = next(std for title, std, _ in rows if title == f"lines of {SIZES[size]}")
        nagle = measure(spec("rs", "lines-nagle"), "lines", size, cfg)
        title = f"lines of {SIZES[size]}, ours with disable_nagle_algorithm = False"
        rows.append((title, std, nagle))
    plain = measure(spec("std", "bulk-plain"), "bulk", 65536, cfg)
    big = measure(spec("rs", "lines-64k"), "lines", 4096, cfg)
    rows.append(("4 KiB lines, ours with rbufsize 65536, vs recv/sendall 64 KiB", plain, big))
    checks.append((f"4 KiB lines, rbufsize 65536 ≥ {BIG_BUFFER_TARGET}x", big[0] / plain[0] >= 0.5))
    print(
        "| one connection | socketserver MiB/s | socketserver_rs MiB/s | ratio "
        "| server CPU µs/MiB, socketserver | socketserver_rs | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for title, (std, std_cpu), (ours, our_cpu) in rows:
        print(
            f"| {title} | {std:,.0f} | {ours:,.0f} | {ours / std:.2f}x "
            f"| {std_cpu:,.0f} | {our_cpu:,.0f} | {std_cpu / our_cpu:.2f}x |"
        )
    print()
    for title, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {title}")


if __name__ == "__main__":
    main()
