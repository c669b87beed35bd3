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
from run import LOADGEN_BIN, SERVERS, Server, build_loadgen, cpu_seconds, loadgen, log  # noqa: E402

MODULES = {"std": "socketserver", "rs": "socketserver_rs"}
HASH_CELLS = [(impl, conns) for impl in MODULES for conns in (1, 8)]
ECHO_CONNS = 8
SCALING_TARGET = 1.7
ECHO_CPU_TARGET = 1.25


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


def cell(impl, handler, conns, cfg):
    """One measured window: requests/s, and the server's and the load
    generator's CPU seconds per request and per wall-clock second."""
    argv = [sys.executable, SERVERS, "serve", "--impl", impl]
    argv += ["--server", "ThreadingTCPServer", "--handler", handler]
    server = Server(argv, f"{MODULES[impl]} {handler}", cpus=None)
    marks = {}

    def on_line(line, proc):
        if line in ("START", "STOP"):
            marks[line] = (cpu_seconds(server.pid), cpu_seconds(proc.pid))

    try:
        options = {"conns": conns, "size": 64, "warmup": cfg.warmup, "duration": cfg.duration}
        budget = cfg.warmup + cfg.duration + 30
        result = loadgen("keepalive", server.port, options, budget, on_line, cpus=None)
    finally:
        server.stop()
    if result["errors"] or result["stalled"] or not result["requests"]:
        raise RuntimeError(f"{server.name}, {conns} conns: {result}")
    (server_start, client_start), (server_stop, client_stop) = marks["START"], marks["STOP"]
    requests, secs = result["requests"], result["secs"]
    return {
        "rps": result["rps"],
        "server_cpu": (server_stop - server_start) / requests,
        "server_cores": (server_stop - server_start) / secs,
        "client_cpu": (client_stop - client_start) / requests,
    }


def median(cells, key):
    return statistics.median(c[key] for c in cells)


def verdict(value, target):
    return "PASS" if value >= target else "MISS"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
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
    print(f"CPython {version} free-threaded, GIL off; {cfg.runs} runs, medians\n")
    print("(a) 2,000 x SHA-256 per line, keep-alive, ThreadingTCPServer")
    print("| module | conns | req/s | server cores busy | server CPU ms/req | client CPU ms/req |")
    print("|---|---|---|---|---|---|")
    for impl, conns in HASH_CELLS:
        cells = hashed[impl, conns]
        print(
            f"| {MODULES[impl]} | {conns} | {median(cells, 'rps'):.0f}"
            f" | {median(cells, 'server_cores'):.2f}"
            f" | {median(cells, 'server_cpu') * 1e3:.3f}"
            f" | {median(cells, 'client_cpu') * 1e3:.3f} |"
        )
    print()
    for impl in MODULES:
        scaling = statistics.median(
            eight["rps"] / one["rps"] for one, eight in zip(hashed[impl, 1], hashed[impl, 8])
        )
        line = f"{MODULES[impl]}: 8 conns / 1 conn = {scaling:.2f}x"
        if impl == "rs":
            line += f" (target >= {SCALING_TARGET}x: {verdict(scaling, SCALING_TARGET)})"
        print(line)

    print(f"\n(b) keep-alive line echo, {ECHO_CONNS} conns, ThreadingTCPServer")
    print("| module | req/s | server cores busy | server CPU µs/req | client CPU µs/req |")
    print("|---|---|---|---|---|")
    for impl in MODULES:
        cells = echo[impl]
        print(
            f"| {MODULES[impl]} | {median(cells, 'rps'):.0f}"
            f" | {median(cells, 'server_cores'):.2f}"
            f" | {median(cells, 'server_cpu') * 1e6:.1f}"
            f" | {median(cells, 'client_cpu') * 1e6:.1f} |"
        )
    saving = statistics.median(
        std["server_cpu"] / rs["server_cpu"] for std, rs in zip(echo["std"], echo["rs"])
    )
    print(
        f"\nserver CPU per request, socketserver / socketserver_rs = {saving:.2f}x"
        f" (target >= {ECHO_CPU_TARGET}x: {verdict(saving, ECHO_CPU_TARGET)})"
    )


if __name__ == "__main__":
    main()
