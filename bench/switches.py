#!/usr/bin/env python3
"""What bounds the per-request cost: context switches and futex calls.

    python3 bench/switches.py [--runs N]

Runs the keep-alive and connection-per-request workloads of bench/run.py
(same servers, same pinning: server on CPU 0, load generator on CPU 1) and
counts, with `perf stat -p` over the measured window, the server's context
switches and futex(2) calls per request. A thread-per-connection server
switches threads at least once per keep-alive request on one CPU; an event
loop does not. Needs perf (Debian: linux-perf) and a prior
`python3 bench/run.py` (which builds the venv and the load generator).
"""

import argparse
import signal
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as run  # noqa: E402  (bench/harness.py, beside this file)

EVENTS = ["context-switches", "task-clock", "syscalls:sys_enter_futex"]

SPECS = [run.STD_TTCP, run.RS_TTCP, run.UVLOOP_TCP, run.RUST_TCP]

WORKLOADS = [
    ("keep-alive line echo, 16 conns", "keepalive", {"conns": 16, "size": 64}),
    ("connection per request, 4 workers", "connper", {"conns": 4, "size": 64}),
]


def perf_events():
    """The events this machine's perf can count for a process."""
    usable = []
    for event in EVENTS:
        probe = subprocess.run(
            ["perf", "stat", "-x,", "-e", event, "true"], capture_output=True, text=True
        )
        if probe.returncode == 0 and "not supported" not in probe.stderr:
            usable.append(event)
    return usable


def parse_perf(text):
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in EVENTS:
            try:
                counts[fields[2]] = float(fields[0])
            except ValueError:
                pass  # "<not counted>"
    return counts


def measure(spec, command, options, events, seconds):
    server = run.Server(run.server_argv(spec), run.label(spec))
    perf = None

    def on_line(line, _proc):
        nonlocal perf
        if line == "START":
            argv = ["perf", "stat", "-x,", "-e", ",".join(events), "-p", str(server.pid)]
            perf = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        elif line == "STOP" and perf is not None:
            perf.send_signal(signal.SIGINT)

    try:
        opts = dict(options, warmup=1, duration=seconds)
        result = run.loadgen(command, server.port, opts, seconds + 30, on_line)
    finally:
        server.stop()
    counts = parse_perf(perf.communicate(timeout=30)[1]) if perf else {}
    requests = result["requests"] or 1
    return {
        "rps": result["rps"],
        "cpu": counts.get("task-clock", float("nan")) * 1000 / requests,
        "cs": counts.get("context-switches", float("nan")) / requests,
        "futex": counts.get("syscalls:sys_enter_futex", float("nan")) / requests,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    events = perf_events()
    if "context-switches" not in events:
        sys.exit("perf cannot count context switches here (install linux-perf)")
    print("Medians of", args.runs, "runs; per request, in the measured window.\n")
    print("| workload | server | req/s | CPU µs/req | context switches/req | futex calls/req |")
    print("|---|---|---|---|---|---|")
    for title, command, options in WORKLOADS:
        for spec in SPECS:
            runs = range(args.runs)
            cells = [measure(spec, command, options, events, args.seconds) for _ in runs]

            def median(key, cells=cells):
                return statistics.median(c[key] for c in cells)

            print(
                f"| {title} | {run.label(spec)} | {median('rps'):.0f} | {median('cpu'):.1f} "
                f"| {median('cs'):.2f} | {median('futex'):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
