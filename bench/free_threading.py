#!/usr/bin/env python3
"""Free-threaded CPython: the standard socketserver and socketserver_rs on
the same GIL-free interpreter, in one run, printing ratios.

(a) CPU-bound requests: each line is hashed 2,000 times (SHA-256) before it
    is echoed, over 1 and then 8 keep-alive connections to a
    ThreadingTCPServer. Without a GIL, 8 connections should keep both cores
    busy: target, socketserver_rs's 8-connection rate >= 1.7x its
    1-connection rate.
(b) Keep-alive line echo over 8 connections: server CPU time per request
    (from /proc/PID/stat around the measured window); target,
    socketserver_rs's at least 1.25x below the standard module's.

    .venv-ft/bin/python bench/free_threading.py [--runs 3] [--duration 3]

Run it with a free-threaded interpreter that has socketserver_rs installed
(a venv of build/cpython/3.14t, as .ci/run makes). It builds bench/loadgen
if needed. Servers and load generator are not pinned: the servers need both
cores, and the load generator shares them. Its own CPU time is measured
too, and printed beside the server's, so that what it takes from the
servers is in plain sight; the CPU-bound cells leave it little to take.
Cells run interleaved, and each ratio is the median of the per-round
ratios, so that load from other processes hits both sides of a ratio alike.
"""

import argparse
import statistics
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    CLK_TCK,
    LOADGEN_BIN,
    SERVERS,
    Server,
    build_loadgen,
    cpu_seconds,
    cpu_times,
    loadgen,
    log,
)

MODULES = {"std": "socketserver", "rs": "socketserver_rs"}
HASH_CELLS = [(impl, conns) for impl in MODULES for conns in (1, 8)]
ECHO_CONNS = 8
SCALING_TARGET = 1.7
ECHO_CPU_TARGET = 1.25
ECHO_CPU = {
    "server_cpu": "CPU",
    "server_user": "user CPU",
    "server_system": "system CPU",
    "client_cpu": "load generator CPU",
}


def check_interpreter():
    """Exits unless this interpreter is free-threaded and stays GIL-free
    with what the servers import."""
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        sys.exit(f"{sys.executable} is not a free-threaded build (python3.14t, say)")
    import hashlib  # noqa: F401
    import socketserver  # noqa: F401

    import socketserver_rs  # noqa: F401

    if sys._is_gil_enabled():
        sys.exit("the GIL is on after importing socketserver_rs (or PYTHON_GIL=1 is set)")


def machine_busy():
    """CPU seconds all processes have run, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / CLK_TCK


def cell(impl, handler, conns, cfg):
    """One measured window: requests/s, and the server's and the load
    generator's CPU seconds per request and per wall-clock second."""
    argv = [sys.executable, SERVERS, "serve", "--impl", impl]
    argv += ["--server", "ThreadingTCPServer", "--handler", handler]
    server = Server(argv, f"{MODULES[impl]} {handler}", cpus=None)
    marks = {}

    def on_line(line, proc):
        if line in ("START", "STOP"):
            marks[line] = (cpu_times(server.pid), cpu_seconds(proc.pid), machine_busy())

    try:
        options = {"conns": conns, "size": 64, "warmup": cfg.warmup, "duration": cfg.duration}
        budget = cfg.warmup + cfg.duration + 30
        result = loadgen("keepalive", server.port, options, budget, on_line, cpus=None)
    finally:
        server.stop()
    if result["errors"] or result["stalled"] or not result["requests"]:
        raise RuntimeError(f"{server.name}, {conns} conns: {result}")
    (server0, client0, busy0), (server1, client1, busy1) = marks["START"], marks["STOP"]
    user, system = (stop - start for start, stop in zip(server0, server1))
    client = client1 - client0
    requests, secs = result["requests"], result["secs"]
    return {
        "rps": result["rps"],
        "server_cpu": (user + system) / requests,
        "server_user": user / requests,
        "server_system": system / requests,
        "server_cores": (user + system) / secs,
        "client_cpu": client / requests,
        "other_cores": max(0.0, busy1 - busy0 - user - system - client) / secs,
    }


def median(cells, key, scale=1.0):
    return statistics.median(c[key] for c in cells) * scale


def ratio(pairs):
    """The median of per-round ratios, and their range."""
    ratios = sorted(a / b for a, b in pairs)
    return f"{statistics.median(ratios):.2f}x (runs {ratios[0]:.2f}-{ratios[-1]:.2f})"


def verdict(pairs, target):
    value = statistics.median(a / b for a, b in pairs)
    return f"target >= {target}x: {'PASS' if value >= target else 'MISS'}"


def report_hash(hashed):
    print("(a) 2,000 x SHA-256 per line, keep-alive, ThreadingTCPServer")
    print("| module | conns | req/s | server cores | others' cores | server CPU ms/req |")
    print("|---|---|---|---|---|---|")
    for impl, conns in HASH_CELLS:
        cells = hashed[impl, conns]
        print(
            f"| {MODULES[impl]} | {conns} | {median(cells, 'rps'):.0f}"
            f" | {median(cells, 'server_cores'):.2f} | {median(cells, 'other_cores'):.2f}"
            f" | {median(cells, 'server_cpu', 1e3):.3f} |"
        )
    print()
    for impl in MODULES:
        pairs = [(eight["rps"], one["rps"]) for one, eight in zip(hashed[impl, 1], hashed[impl, 8])]
        line = f"{MODULES[impl]}: req/s 8 conns / 1 conn = {ratio(pairs)}"
        if impl == "rs":
            line += f" ({verdict(pairs, SCALING_TARGET)})"
        print(line)


def report_echo(echo):
    print(f"(b) keep-alive line echo, {ECHO_CONNS} conns, ThreadingTCPServer")
    print(
        "| module | req/s | server cores | others' cores"
        " | server CPU µs/req | user | system | client CPU µs/req |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for impl in MODULES:
        cells = echo[impl]
        cores = [f"{median(cells, key):.2f}" for key in ("server_cores", "other_cores")]
        cpu = [f"{median(cells, key, 1e6):.1f}" for key in ECHO_CPU]
        print(f"| {MODULES[impl]} | {median(cells, 'rps'):.0f} | {' | '.join(cores + cpu)} |")
    print()
    rounds = list(zip(echo["std"], echo["rs"]))
    for key, name in list(ECHO_CPU.items())[:3]:
        pairs = [(std[key], rs[key]) for std, rs in rounds]
        line = f"server {name} per request, socketserver / socketserver_rs = {ratio(pairs)}"
        if key == "server_cpu":
            line += f" ({verdict(pairs, ECHO_CPU_TARGET)})"
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    cfg = parser.parse_args()
    check_interpreter()
    if not (LOADGEN_BIN / "loadgen").exists():
        build_loadgen()

    hashed = {key: [] for key in HASH_CELLS}
    echo = {impl: [] for impl in MODULES}
    for round_no in range(1, cfg.runs + 1):
        for impl, conns in HASH_CELLS:
            c = cell(impl, "line-hash", conns, cfg)
            hashed[impl, conns].append(c)
            log(f"run {round_no} hash {MODULES[impl]:15} {conns} conns {c['rps']:8.0f} req/s")
        for impl in MODULES:
            c = cell(impl, "line", ECHO_CONNS, cfg)
            echo[impl].append(c)
            log(f"run {round_no} echo {MODULES[impl]:15} {c['server_cpu'] * 1e6:8.1f} µs/request")

    version = sys.version.split()[0]
    print(f"CPython {version} free-threaded, GIL off; medians of {cfg.runs} runs")
    print("cores: CPU seconds per second of the measured window (server; every other")
    print("process on the machine but the load generator)\n")
    report_hash(hashed)
    print()
    report_echo(echo)


if __name__ == "__main__":
    main()
